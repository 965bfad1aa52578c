//! The command line (argh): `run [--once] [--shard I/N]`, `check`, `state show|reset`,
//! `--version`.
//!
//! Owns: argument shapes and help texts. Must not: do any work — `app` does.

use argh::FromArgs;
use std::path::PathBuf;

/// msgtrace: Microsoft 365 message trace to your SIEM over one TLS connection.
#[derive(FromArgs, Debug)]
pub struct Cli {
    /// print version, target and build profile
    #[argh(switch)]
    pub version: bool,
    #[argh(subcommand)]
    pub command: Option<Command>,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum Command {
    Run(RunCmd),
    Check(CheckCmd),
    State(StateCmd),
}

/// run every enabled input until SIGTERM/SIGINT
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "run")]
pub struct RunCmd {
    /// config file (default: $CONFIG_FILE under ./config/, else ./config.yaml)
    #[argh(option, short = 'c')]
    pub config: Option<PathBuf>,
    /// pull until up to date, deliver, checkpoint, exit
    #[argh(switch)]
    pub once: bool,
    /// run only the tenants of shard I of N (I may be `auto`: the host name's trailing
    /// ordinal, as StatefulSet pod msgtrace-3 has); default: $MSGTRACE_SHARD, else all
    #[argh(option)]
    pub shard: Option<String>,
}

/// validate the config and prove each setup step live
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "check")]
pub struct CheckCmd {
    /// config file (default: $CONFIG_FILE under ./config/, else ./config.yaml)
    #[argh(option, short = 'c')]
    pub config: Option<PathBuf>,
    /// only the checks that need no network
    #[argh(switch)]
    pub offline: bool,
}

/// print or clear the persisted cursors
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "state")]
pub struct StateCmd {
    /// config file (default: $CONFIG_FILE under ./config/, else ./config.yaml)
    #[argh(option, short = 'c')]
    pub config: Option<PathBuf>,
    /// only this input (its name or id); default: all
    #[argh(option)]
    pub input: Option<String>,
    /// only the tenants of shard I of N, as `run --shard`; default: $MSGTRACE_SHARD, else all
    #[argh(option)]
    pub shard: Option<String>,
    /// show | reset
    #[argh(positional)]
    pub action: String,
}
