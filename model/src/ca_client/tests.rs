//! The CA client against a recording IstioCertificateService on 127.0.0.1 that refuses
//! every request: what matters here is the token each request carried.

use std::sync::{Arc, Mutex};

use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

use super::*;
use crate::pb::istio_ca::istio_certificate_service_server::{
    IstioCertificateService, IstioCertificateServiceServer,
};
use crate::pb::istio_ca::IstioCertificateResponse;

#[derive(Clone, Default)]
struct Recorder {
    authorization: Arc<Mutex<Vec<String>>>,
}

#[tonic::async_trait]
impl IstioCertificateService for Recorder {
    async fn create_certificate(
        &self,
        req: Request<IstioCertificateRequest>,
    ) -> Result<Response<IstioCertificateResponse>, Status> {
        let header = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        self.authorization.lock().unwrap().push(header);
        Err(Status::unavailable("recording only"))
    }
}

async fn serve(rec: Recorder) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(IstioCertificateServiceServer::new(rec))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    format!("http://{addr}")
}

fn identity() -> SpiffeId {
    SpiffeId::new("cluster.local", "shop", "web").unwrap()
}

#[tokio::test]
async fn each_csr_carries_the_token_file_as_it_is_now() {
    let rec = Recorder::default();
    let endpoint = serve(rec.clone()).await;
    let dir = std::env::temp_dir().join(format!("meshwork-ca-client-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("token");
    std::fs::write(&path, "first\n").unwrap();
    let ca = CaClient::new(
        &endpoint,
        TokenSource::File(path.clone()),
        Duration::from_secs(3600),
        None,
    )
    .unwrap();

    let e = ca.sign(&identity()).await.unwrap_err();
    assert!(matches!(e, CaClientError::Rpc { .. }), "{e}");
    std::fs::write(&path, "second\n").unwrap();
    let _ = ca.sign(&identity()).await.unwrap_err();
    assert_eq!(
        *rec.authorization.lock().unwrap(),
        ["Bearer first", "Bearer second"]
    );

    std::fs::remove_file(&path).unwrap();
    let e = ca.sign(&identity()).await.unwrap_err();
    assert!(matches!(e, CaClientError::TokenUnavailable { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("spiffe://cluster.local/ns/shop/sa/web")
            && msg.contains(&path.display().to_string()),
        "{msg}"
    );
    assert_eq!(
        rec.authorization.lock().unwrap().len(),
        2,
        "no request without a token"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_static_empty_token_sends_no_authorization() {
    let rec = Recorder::default();
    let endpoint = serve(rec.clone()).await;
    let ca = CaClient::new(&endpoint, "", Duration::from_secs(3600), None).unwrap();
    let _ = ca.sign(&identity()).await.unwrap_err();
    assert_eq!(*rec.authorization.lock().unwrap(), [""]);
}
