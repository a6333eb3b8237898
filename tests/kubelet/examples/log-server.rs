//! Runs only the kubelet's log endpoint, for trying `kubectl logs` against a state
//! directory: `log-server <state-dir> <ip> <port>`.

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args: Vec<String> = std::env::args().collect();
    let (Some(dir), Some(ip), Some(port)) = (args.get(1), args.get(2), args.get(3)) else {
        eprintln!("usage: log-server <state-dir> <ip> <port>");
        std::process::exit(2);
    };
    let (Ok(ip), Ok(port)) = (ip.parse(), port.parse()) else {
        eprintln!("bad ip or port");
        std::process::exit(2);
    };
    studio_kubelet::server::run(dir.into(), ip, port).await;
}
