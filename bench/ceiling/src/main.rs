//! `hyper-ceiling ADDRESS`: answers every HTTP/1.1 request with an empty 200, on one tokio worker.
//!
//! The baseline between nginx and sidekey in `bench/load.sh`: what the HTTP library sidekey is built on
//! costs per request before any routing, middleware or work, on this machine, in the same run.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Empty;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() -> std::io::Result<()> {
    let address = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:18482".to_owned());
    let listener = TcpListener::bind(&address).await?;
    loop {
        // Socket options as poem leaves them (it sets none).
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            let service = service_fn(|_: Request<hyper::body::Incoming>| async {
                Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
            });
            // A client that goes away mid-request is not this baseline's business.
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}
