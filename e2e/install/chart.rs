//! The chart as Helm renders it, through `e2e/chart/render.py`, and a check that the binary
//! accepts every flag the chart passes, since a rejected flag would crash-loop the pods.

use std::path::{Path, PathBuf};
use std::process::Command;

use clap::Parser;
use gangway::cli::Cli;
use serde_json::Value;

/// Repository root, where `.venv` and `e2e/chart/render.py` live.
pub fn repository_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Returns the Python of `.venv`, or panics with the command that creates it.
pub fn venv_python() -> PathBuf {
    let python = repository_root().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run e2e/setup.sh from the repository root to create .venv",
        python.display()
    );
    python
}

/// Renders the chart as release `gangway` in namespace `gangway`, with `--set` expressions,
/// and returns the manifest: the Namespace, then the chart's objects in install order.
pub fn render(sets: &[&str]) -> String {
    let mut command = Command::new(venv_python());
    command
        .current_dir(repository_root())
        .arg("e2e/chart/render.py");
    for set in sets {
        command.args(["--set", set]);
    }
    let output = command.output().expect("failed to run render.py");
    assert!(
        output.status.success(),
        "render.py {sets:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("render.py prints UTF-8")
}

/// Parses a multi-document manifest, skipping documents that hold only comments.
pub fn documents(manifest: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(manifest)
        .expect("the rendered manifest is valid YAML")
        .into_iter()
        .filter(|document| !document.is_null())
        .collect()
}

/// Returns the `args` of the `gangway` container of the rendered Deployment.
pub fn controller_args(documents: &[Value]) -> Vec<String> {
    let deployment = documents
        .iter()
        .find(|document| document["kind"] == "Deployment")
        .expect("the chart renders a Deployment");
    let containers = deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("the Deployment has containers");
    let container = containers
        .iter()
        .find(|container| container["name"] == "gangway")
        .expect("the Deployment has a gangway container");
    container["args"]
        .as_array()
        .expect("the gangway container has args")
        .iter()
        .map(|argument| {
            argument
                .as_str()
                .expect("every container argument is a string")
                .to_owned()
        })
        .collect()
}

/// Returns the flag name of `--flag=value` or `--flag`.
fn flag_name(argument: &str) -> &str {
    argument.split_once('=').map_or(argument, |(flag, _)| flag)
}

#[test]
fn chart_flags_known_to_binary() {
    let help = Command::new(env!("CARGO_BIN_EXE_gangway"))
        .args(["run", "--help"])
        .output()
        .expect("failed to run gangway run --help");
    assert!(help.status.success(), "gangway run --help failed");
    let help = String::from_utf8_lossy(&help.stdout);
    let known: Vec<&str> = help
        .split_whitespace()
        .filter(|word| word.starts_with("--"))
        .map(|word| word.trim_end_matches(','))
        .collect();

    // Value sets that switch on every optional flag of the chart.
    let value_sets: &[&[&str]] = &[
        &[],
        &["controller.watchNamespace=apps"],
        &["controller.publishAddress=203.0.113.7"],
        &[
            "controller.workerThreads=4",
            "controller.logFormat=text",
            "controller.bindAddress=::",
            "controller.leaderElection.leaseName=edge-lock",
        ],
    ];
    for sets in value_sets {
        let arguments = controller_args(&documents(&render(sets)));
        assert_eq!(
            arguments.first().map(String::as_str),
            Some("run"),
            "{sets:?}"
        );

        for argument in &arguments[1..] {
            let flag = flag_name(argument);
            assert!(
                known.contains(&flag),
                "the chart with {sets:?} passes {flag}, which `gangway run --help` does not list"
            );
        }
        // The parser also checks every value and the flag combination.
        let parsed = Cli::try_parse_from(
            std::iter::once("gangway").chain(arguments.iter().map(String::as_str)),
        );
        if let Err(error) = parsed {
            panic!("gangway rejects the chart's arguments with {sets:?}: {error}\n{arguments:?}");
        }
    }
}
