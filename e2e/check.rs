//! End-to-end tests of `gangway check`: the built binary on the example directories.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name)
}

fn gangway_check(arguments: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gangway"))
        .arg("check")
        .args(arguments)
        .env_remove("GANGWAY_OUTPUT")
        .env_remove("GANGWAY_MANIFESTS")
        .output()
        .expect("failed to run gangway")
}

fn stdout_of(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).expect("stdout is not UTF-8")
}

#[test]
fn broken_example_exits_one_naming_problems() {
    let directory = example("broken");
    let output = gangway_check(&["--manifests", directory.to_str().unwrap()]);
    let stdout = stdout_of(&output);

    assert_eq!(output.status.code(), Some(1), "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines.contains(&"error: File typo.yaml: InvalidManifest: document 1: invalid YAML at line 5, column 5: while parsing a flow mapping, did not find expected ',' or '}'; the file adds no objects until it is fixed"),
        "{stdout}"
    );
    assert!(
        lines.contains(
            &"orphan.example.test  /     Prefix  (responds 503)  -          -           no"
        ),
        "{stdout}"
    );
    assert!(
        lines.iter().any(|line| line.starts_with(
            "error: Ingress default/orphan spec.rules[0].http.paths[0].backend.service.name: ServiceNotFound:"
        )),
        "{stdout}"
    );
    assert!(
        lines.iter().any(|line| line.starts_with(
            "error: File wrong-type.yaml: InvalidManifest: document 1: Service default/wrong-type: invalid field `spec.ports[0].port`"
        )),
        "{stdout}"
    );
}

#[test]
fn standalone_example_exits_zero() {
    let directory = example("standalone");
    let output = gangway_check(&["--manifests", directory.to_str().unwrap()]);
    let stdout = stdout_of(&output);

    assert_eq!(output.status.code(), Some(0), "{stdout}");
    let expected = "\
HOST               PATH  MATCH   BACKEND        ENDPOINTS       TLS SECRET  HTTPS REDIRECT
shop.example.test  /     Prefix  shop/web:http  127.0.0.1:9001  -           no
shop.example.test  /api  Prefix  shop/api:8080  127.0.0.1:9002  -           no

0 errors, 0 warnings.
";
    assert_eq!(stdout, expected);
}

#[test]
fn json_output_parses() {
    let directory = example("broken");
    let output = gangway_check(&[
        "--manifests",
        directory.to_str().unwrap(),
        "--output",
        "json",
    ]);

    assert_eq!(output.status.code(), Some(1));
    let document: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("output is not JSON");
    assert!(document["routes"]["virtualHosts"].is_array(), "{document}");
    let problems = document["problems"].as_array().expect("problems is a list");
    let typo = problems
        .iter()
        .find(|problem| problem["object"]["name"] == "typo.yaml")
        .expect("no problem for typo.yaml");
    assert_eq!(typo["object"]["kind"], "File");
    assert_eq!(typo["reason"], "InvalidManifest");
    assert_eq!(typo["severity"], "error");
}

#[test]
fn output_format_from_environment() {
    let directory = example("standalone");
    let output = Command::new(env!("CARGO_BIN_EXE_gangway"))
        .args(["check", "--manifests", directory.to_str().unwrap()])
        .env("GANGWAY_OUTPUT", "json")
        .output()
        .expect("failed to run gangway");

    assert_eq!(output.status.code(), Some(0));
    let document: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("output is not JSON");
    assert_eq!(document["problems"], serde_json::json!([]));
}

#[test]
fn missing_directory_exits_two() {
    let output = gangway_check(&["--manifests", "/nonexistent/gangway-manifests"]);
    let stderr = String::from_utf8_lossy(&output.stderr);

    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr.contains("failed to read the manifest directory /nonexistent/gangway-manifests"),
        "{stderr}"
    );
    assert!(output.stdout.is_empty());
}
