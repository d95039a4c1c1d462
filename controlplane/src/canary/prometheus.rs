//! [`PrometheusJudge`]: a check's query sent to the Prometheus HTTP API (`/api/v1/query`),
//! as Flagger's Prometheus provider sends it; the first sample of the answer is the value.

use std::time::Duration;

use futures::future::BoxFuture;
use hyper::Method;
use serde::Deserialize;

use super::http::{encode_component, HttpClient};
use super::judge::{Judge, JudgeError, Measurement};

pub struct PrometheusJudge {
    /// Address for the built-in metrics (and templates without one), e.g.
    /// `http://127.0.0.1:9090`.
    pub default_address: String,
    pub timeout: Duration,
    client: HttpClient,
}

impl PrometheusJudge {
    pub fn new(default_address: impl Into<String>) -> Self {
        PrometheusJudge {
            default_address: default_address.into(),
            timeout: Duration::from_secs(5),
            client: HttpClient::default(),
        }
    }
}

#[derive(Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    error: String,
    #[serde(default)]
    data: Option<Data>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Data {
    result_type: String,
    result: serde_json::Value,
}

/// The value of a Prometheus answer: the first sample of a vector, or a scalar. `None`
/// when there is no sample or it is not a number (NaN included: 0/0 of a quiet target).
pub fn first_value(body: &[u8]) -> Result<Option<f64>, String> {
    let a: Answer =
        serde_json::from_slice(body).map_err(|e| format!("not a Prometheus answer: {e}"))?;
    if a.status != "success" {
        return Err(format!("query failed: {}", a.error));
    }
    let Some(data) = a.data else {
        return Ok(None);
    };
    let sample = match data.result_type.as_str() {
        "vector" => data
            .result
            .as_array()
            .and_then(|r| r.first())
            .and_then(|s| s.get("value"))
            .cloned(),
        "scalar" => Some(data.result),
        other => return Err(format!("result type {other} (expected vector or scalar)")),
    };
    let value = sample
        .as_ref()
        .and_then(|v| v.get(1))
        .and_then(|v| v.as_str())
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|v| !v.is_nan());
    Ok(value)
}

impl Judge for PrometheusJudge {
    fn measure<'a>(&'a self, m: &'a Measurement) -> BoxFuture<'a, Result<f64, JudgeError>> {
        Box::pin(async move {
            if m.provider != "prometheus" {
                return Err(JudgeError::Provider {
                    metric: m.metric.clone(),
                    provider: m.provider.clone(),
                });
            }
            let address = if m.address.is_empty() {
                &self.default_address
            } else {
                &m.address
            };
            let query_err = |message: String| JudgeError::Query {
                metric: m.metric.clone(),
                address: address.clone(),
                message,
            };
            let url = format!(
                "{}/api/v1/query?query={}",
                address.trim_end_matches('/'),
                encode_component(&m.query)
            );
            let (status, body) = self
                .client
                .send(Method::GET, &url, None, self.timeout)
                .await
                .map_err(query_err)?;
            if !status.is_success() {
                let text = String::from_utf8_lossy(&body[..body.len().min(200)]).to_string();
                return Err(query_err(format!("HTTP {status}: {text}")));
            }
            first_value(&body)
                .map_err(query_err)?
                .ok_or_else(|| JudgeError::NoValues {
                    metric: m.metric.clone(),
                    target: format!("{}.{}", m.target, m.namespace),
                })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_vectors_scalars_and_nan() {
        let v = br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1700000000.1,"99.5"]}]}}"#;
        assert_eq!(first_value(v).unwrap(), Some(99.5));
        let s =
            br#"{"status":"success","data":{"resultType":"scalar","result":[1700000000.1,"3"]}}"#;
        assert_eq!(first_value(s).unwrap(), Some(3.0));
        let nan = br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"NaN"]}]}}"#;
        assert_eq!(first_value(nan).unwrap(), None);
        let empty = br#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert_eq!(first_value(empty).unwrap(), None);
        let err = br#"{"status":"error","errorType":"bad_data","error":"parse error"}"#;
        assert_eq!(first_value(err).unwrap_err(), "query failed: parse error");
    }
}
