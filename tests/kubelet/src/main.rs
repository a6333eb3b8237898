//! Thin entry point; see the library docs for the rules.

use clap::Parser;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // Pick the TLS provider explicitly: with more than one rustls provider compiled in
    // (feature unification in a workspace build), rustls would otherwise panic.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = studio_kubelet::Args::parse();
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,kube=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if args.log_json {
        builder.json().init();
    } else {
        builder.init();
    }
    match studio_kubelet::run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "studio-kubelet failed");
            std::process::ExitCode::FAILURE
        }
    }
}
