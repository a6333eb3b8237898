fn main() {
    println!("studio-node");
}
