//! The `gangway` binary: parses the command line and runs the subcommand.

use std::process::ExitCode;

use clap::Parser;
use gangway::cli::{Cli, Command};

fn main() -> ExitCode {
    // rustls is built with ring only, and installing ring as the process default lets code
    // that asks rustls for the default provider find it. Installing fails only when a
    // provider is already installed.
    let _ = rustls::crypto::ring::default_provider().install_default();

    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => gangway::run::run(*args),
        Command::Check(args) => gangway::check::check(&args),
        Command::Demo(args) => gangway::demo::demo(args),
    }
}
