//! The node-agent socket: the CNI plugin's ADD and DEL requests (`meshwork_cni::agent`),
//! served concurrently, each answered once its work is done.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use meshwork_cni::agent::{
    parse_cidr, AddRequest, AgentReply, AgentRequest, AgentServer, Incoming,
};
use tokio_util::sync::CancellationToken;

use super::records::key_of;
use super::{Added, InPod, PodRecord};

/// Serves `server` until `stop`.
pub async fn serve_agent(server: AgentServer, inpod: Arc<InPod>, stop: CancellationToken) {
    tracing::info!(socket = %server.path().display(), "node-agent socket ready");
    loop {
        let conn = tokio::select! {
            c = server.accept() => c,
            _ = stop.cancelled() => return,
        };
        let conn = match conn {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "node-agent socket: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let inpod = inpod.clone();
        tokio::spawn(async move {
            match conn.read_request().await {
                Ok(incoming) => handle(&inpod, incoming).await,
                Err(e) => tracing::warn!(error = %e, "node-agent socket: request refused"),
            }
        });
    }
}

fn record(req: &AddRequest) -> Result<PodRecord, String> {
    let ips = req
        .ips
        .iter()
        .map(|s| {
            parse_cidr(s)
                .map(|(ip, _)| ip)
                .ok_or_else(|| format!("ips: {s:?} is not an address in CIDR notation"))
        })
        .collect::<Result<Vec<IpAddr>, _>>()?;
    if ips.is_empty() {
        return Err("ips: the network plugin gave the pod no address".into());
    }
    Ok(PodRecord {
        namespace: req.pod.namespace.clone(),
        name: req.pod.name.clone(),
        uid: req.pod.uid.clone(),
        container_id: req.container_id.clone(),
        netns: PathBuf::from(&req.netns),
        ifname: req.ifname.clone(),
        ips,
    })
}

async fn handle(inpod: &InPod, mut incoming: Incoming) {
    let pod = format!(
        "{}/{}",
        incoming.request.pod().namespace,
        incoming.request.pod().name
    );
    let reply = match &incoming.request {
        AgentRequest::Add(req) => match (record(req), incoming.netns.take()) {
            (Err(e), _) => AgentReply::Error(format!("pod {pod}: {e}")),
            (Ok(_), None) => AgentReply::Error(format!("pod {pod}: no network namespace passed")),
            (Ok(rec), Some(netns)) => match inpod.add(rec, netns).await {
                Ok(Added::Enrolled) => AgentReply::Enrolled,
                Ok(Added::NotCaptured) => AgentReply::NotCaptured,
                Err(e) => {
                    tracing::warn!(%pod, error = %e, "CNI ADD failed");
                    AgentReply::Error(e.to_string())
                }
            },
        },
        AgentRequest::Del(req) => {
            inpod
                .del(
                    &key_of(&req.pod.namespace, &req.pod.name),
                    &req.container_id,
                )
                .await;
            AgentReply::Removed
        }
    };
    tracing::info!(%pod, op = incoming.request.op(), ?reply, "CNI request served");
    if let Err(e) = incoming.reply(reply).await {
        tracing::warn!(%pod, error = %e, "node-agent reply not delivered");
    }
}
