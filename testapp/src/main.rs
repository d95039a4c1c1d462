use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use meshwork_testapp::{client, faults, server};

#[derive(Parser)]
#[command(
    name = "meshwork-testapp",
    about = "HTTP test application for Meshwork"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve HTTP/1.1.
    Serve {
        #[arg(long, env = "PORT", default_value_t = 8080)]
        port: u16,
        #[arg(long, env = "BIND", default_value = "0.0.0.0")]
        bind: std::net::IpAddr,
        #[arg(long, env = "APP", default_value = "testapp")]
        app: String,
        #[arg(long, env = "VERSION", default_value = "v1")]
        version: String,
        #[arg(long, env = "POD_NAME", default_value = "")]
        pod: String,
        /// Fraction of requests failing with --fail-code.
        #[arg(long, default_value = "0")]
        fail_rate: String,
        #[arg(long, default_value = "503")]
        fail_code: String,
        /// Delay added to every request.
        #[arg(long, default_value = "0")]
        delay_ms: String,
    },
    /// GET a URL --count times and print a JSON summary.
    Get {
        url: String,
        #[arg(long, default_value_t = 1)]
        count: u64,
        /// NAME:VALUE, repeatable.
        #[arg(long = "header", short = 'H')]
        headers: Vec<String>,
        #[arg(long, default_value_t = 5000)]
        timeout_ms: u64,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().cmd {
        Cmd::Serve {
            port,
            bind,
            app,
            version,
            pod,
            fail_rate,
            fail_code,
            delay_ms,
        } => {
            let pod = if pod.is_empty() {
                std::env::var("HOSTNAME").unwrap_or_default()
            } else {
                pod
            };
            let cfg = faults::FaultConfig {
                rate: faults::parse_rate("--fail-rate", &fail_rate)?,
                code: faults::parse_code("--fail-code", &fail_code)?,
                delay: faults::parse_delay("--delay-ms", &delay_ms)?,
            };
            let state = server::State::new(
                server::Identity {
                    service: app,
                    version,
                    pod,
                },
                cfg,
            );
            let listener = tokio::net::TcpListener::bind((bind, port))
                .await
                .with_context(|| format!("binding {bind}:{port}"))?;
            tracing::info!(%bind, port, "serving");
            server::serve(listener, state).await?;
            Ok(())
        }
        Cmd::Get {
            url,
            count,
            headers,
            timeout_ms,
        } => {
            let target = client::parse_url(&url)?;
            let headers = headers
                .iter()
                .map(|h| client::parse_header(h))
                .collect::<Result<Vec<_>, _>>()?;
            let summary =
                client::run(&target, &headers, count, Duration::from_millis(timeout_ms)).await;
            println!("{}", serde_json::to_string(&summary)?);
            if summary.errors == summary.total && summary.total > 0 {
                std::process::exit(1);
            }
            Ok(())
        }
    }
}
