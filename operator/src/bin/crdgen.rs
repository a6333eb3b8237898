//! Prints every Studio CustomResourceDefinition as one multi-document YAML
//! (`cargo run -p studio-operator --bin crdgen`), or with `--dir DIR` writes each into
//! its own file there (`--dir deploy/crds`, then copy to `charts/studio-operator/crds/`).

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => print!("{}", studio_operator::crd_yaml()?),
        [flag, dir] if flag == "--dir" => {
            std::fs::create_dir_all(dir)?;
            for (file, crd) in studio_operator::crds() {
                let path = std::path::Path::new(dir).join(file);
                std::fs::write(&path, studio_operator::crd_file_yaml(&crd)?)?;
                println!("{}", path.display());
            }
        }
        _ => anyhow::bail!("usage: crdgen [--dir DIR]"),
    }
    Ok(())
}
