//! Prints the StudioCluster CustomResourceDefinition as YAML (`cargo run -p studio-operator --bin crdgen`).

fn main() -> anyhow::Result<()> {
    print!("{}", studio_operator::crd_yaml()?);
    Ok(())
}
