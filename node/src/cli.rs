//! The command line: `flowmesh up`, `flowmesh sql`, `flowmesh status`.

use std::{net::SocketAddr, path::PathBuf};

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "flowmesh",
    version,
    about = "Zero-code observability mesh: eBPF capture, storage and SQL on every host"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node: capture on, storage in the data directory, API and UI on loopback.
    Up(UpArgs),
    /// Run a SQL query against a node and print the result.
    Sql(SqlArgs),
    /// Show a node's status.
    Status(ClientArgs),
    /// Assemble a trace over the mesh and print it as a tree.
    Trace(TraceArgs),
}

#[derive(Debug, clap::Args)]
pub struct TraceArgs {
    /// A trace id, `x-request-id:<value>` or `syscall:<node>:<id>`.
    pub seed: String,
    #[command(flatten)]
    pub client: ClientArgs,
    /// The nodes to ask (as for `sql`; the node's `query.default_scope` when not given).
    #[arg(long)]
    pub scope: Option<String>,
    /// How far back to look for the trace's first spans.
    #[arg(long, default_value = "24h")]
    pub since: String,
    /// `table` (the tree as text) or `json` (every span with its parent).
    #[arg(long, value_enum, default_value = "table")]
    pub format: OutputFormat,
}

#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// TOML config file (every key: deploy/config/flowmesh.example.toml).
    #[arg(long, short, env = "FLOWMESH_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory (also FLOWMESH_DATA_DIR).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// HTTP listen address.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Raft/dictionary peer listen address (`consensus.listen`; port 0 picks a free one).
    #[arg(long)]
    pub peer_listen: Option<SocketAddr>,
    /// Flight SQL listen address (`flight_sql.listen`; port 0 picks a free one).
    #[arg(long)]
    pub flight_listen: Option<SocketAddr>,
    /// Run without eBPF capture (storage and queries only).
    #[arg(long)]
    pub no_capture: bool,
}

#[derive(Debug, clap::Args)]
pub struct ClientArgs {
    /// The node's HTTP address.
    #[arg(
        long,
        env = "FLOWMESH_SERVER",
        default_value = "http://127.0.0.1:20416"
    )]
    pub server: String,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct SqlArgs {
    /// The SQL statement.
    pub sql: String,
    #[command(flatten)]
    pub client: ClientArgs,
    #[arg(long, value_enum, default_value = "table")]
    pub format: OutputFormat,
    /// The nodes to ask: `node`, `cluster`, `region`, `region:<name>` or `global` (the
    /// node's `query.default_scope` when not given).
    #[arg(long)]
    pub scope: Option<String>,
    /// Fail when a node in scope does not answer, instead of a partial answer.
    #[arg(long)]
    pub strict: bool,
}
