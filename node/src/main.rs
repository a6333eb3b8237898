//! studio-node: the content repository server.

use clap::Parser;
use studio_node::config::Config;

fn main() -> std::process::ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    if studio_node::config::version_json_requested(&args) {
        println!("{}", studio_node::config::version_json());
        return std::process::ExitCode::SUCCESS;
    }
    let config = Config::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("studio-node: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(studio_node::server::run(config)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "studio-node failed");
            eprintln!("studio-node: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
