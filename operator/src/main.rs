fn main() {
    println!("studio-operator");
}
