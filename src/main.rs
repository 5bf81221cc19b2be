//! The `gangway` binary: parses the command line and runs the subcommand.

use std::process::ExitCode;

use clap::Parser;
use gangway::cli::{Cli, Command};

fn main() -> ExitCode {
    // rustls is built with ring only; installing it as the process default means no code path
    // can pick another provider. It fails only when a provider is already installed.
    let _ = rustls::crypto::ring::default_provider().install_default();

    let cli = Cli::parse();
    match cli.command {
        Command::Check(args) => gangway::check::check(&args),
        // TODO: serve through the proxy once its API is on this branch.
        Command::Run(_) | Command::Demo(_) => {
            eprintln!("gangway: run and demo are not built yet");
            ExitCode::from(2)
        }
    }
}
