//! The `flowmesh` binary: parses the command line and hands over to the library.

use std::io::Cursor;

use anyhow::{Context, bail};
use clap::Parser;
use datafusion::arrow::{ipc::reader::StreamReader, util::pretty::pretty_format_batches};
use flowmesh_node::{
    Node,
    cli::{Cli, Command, OutputFormat, UpArgs},
    config::NodeConfig,
    server::ARROW_STREAM,
};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Up(args) => up(args),
        Command::Sql(args) => {
            let client = reqwest::blocking::Client::new();
            let url = format!("{}/v1/sql", args.client.server.trim_end_matches('/'));
            let accept = match args.format {
                OutputFormat::Table => ARROW_STREAM,
                OutputFormat::Json => "application/json",
            };
            let mut query = vec![("strict", args.strict.to_string())];
            if let Some(scope) = &args.scope {
                query.push(("scope", scope.clone()));
            }
            let resp = client
                .post(&url)
                .query(&query)
                .header("accept", accept)
                .header("content-type", "text/plain")
                .body(args.sql)
                .send()
                .with_context(|| format!("failed to reach {url}"))?;
            let status = resp.status();
            let missing = resp
                .headers()
                .get("x-flowmesh-missing-nodes")
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.is_empty())
                .map(str::to_string);
            let body = resp.bytes().context("failed to read the response")?;
            if !status.is_success() {
                let message = serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["error"].as_str().map(str::to_string))
                    .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
                bail!("{status}: {message}");
            }
            match args.format {
                OutputFormat::Json => println!("{}", String::from_utf8_lossy(&body)),
                OutputFormat::Table => {
                    let reader = StreamReader::try_new(Cursor::new(body), None)
                        .context("bad Arrow stream")?;
                    let schema = reader.schema();
                    let mut batches = reader
                        .collect::<Result<Vec<_>, _>>()
                        .context("bad Arrow stream")?;
                    if batches.is_empty() {
                        // still show the columns
                        batches.push(datafusion::arrow::record_batch::RecordBatch::new_empty(
                            schema,
                        ));
                    }
                    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
                    println!("{}", pretty_format_batches(&batches)?);
                    println!("{rows} row{}", if rows == 1 { "" } else { "s" });
                    if let Some(missing) = missing {
                        eprintln!("partial answer: no answer from {missing}");
                    }
                }
            }
            Ok(())
        }
        Command::Trace(args) => {
            let url = format!(
                "{}/v1/trace/{}",
                args.client.server.trim_end_matches('/'),
                urlencode(&args.seed)
            );
            let mut query = vec![("since", args.since.clone())];
            if let Some(scope) = &args.scope {
                query.push(("scope", scope.clone()));
            }
            if matches!(args.format, OutputFormat::Table) {
                query.push(("format", "text".into()));
            }
            let resp = reqwest::blocking::Client::new()
                .get(&url)
                .query(&query)
                .send()
                .with_context(|| format!("failed to reach {url}"))?;
            let status = resp.status();
            let body = resp.text().context("failed to read the response")?;
            if !status.is_success() {
                let message = serde_json::from_str::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["error"].as_str().map(str::to_string))
                    .unwrap_or(body);
                bail!("{status}: {message}");
            }
            print!("{body}");
            Ok(())
        }
        Command::Status(args) => {
            let url = format!("{}/v1/status", args.server.trim_end_matches('/'));
            let v: serde_json::Value = reqwest::blocking::get(&url)
                .with_context(|| format!("failed to reach {url}"))?
                .json()
                .context("bad status response")?;
            println!("{}", serde_json::to_string_pretty(&v)?);
            Ok(())
        }
    }
}

fn up(args: UpArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let mut config = NodeConfig::load(args.config.as_deref(), std::env::vars())?;
    if let Some(dir) = args.data_dir {
        config.storage.data_dir = dir;
    }
    if let Some(listen) = args.listen {
        config.http.listen = listen;
    }
    if let Some(listen) = args.peer_listen {
        config.consensus.listen = listen;
    }
    if let Some(listen) = args.flight_listen {
        config.flight_sql.listen = listen;
    }
    if args.no_capture {
        config.capture.enabled = false;
    }
    config.validate()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_name("flowmesh-main")
        .enable_all()
        .build()
        .context("failed to start the runtime")?;
    runtime.block_on(async move {
        let node = Node::start(config).await?;
        println!(
            "flowmesh node up: http://{}  (Ctrl+C to stop)",
            node.http_addr()
        );
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        node.shutdown().await;
        anyhow::Ok(())
    })
}

/// Percent-encodes a path segment.
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~:".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
