//! Tests of the manifest directory reader and its watcher, on real temporary directories.

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::metrics::Metrics;
use crate::status::StatusReport;
use crate::store::ObjectKey;

/// How long a watcher test waits for a change to be published before it fails. Generous,
/// because other builds may load the machine; the provider normally needs milliseconds.
const PUBLISH_WAIT: Duration = Duration::from_secs(2);

fn service(name: &str, port: u16) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  ports:\n  - port: {port}\n"
    )
}

const BROKEN: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: [unclosed\n";

fn write(root: &Path, relative: &str, text: &str) {
    let path = root.join(relative);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

fn scanned(root: &Path) -> (Store, Vec<Problem>) {
    let mut set = ManifestSet::new(root).unwrap();
    set.rescan(&Changes::default()).unwrap();
    set.build()
}

fn service_names(store: &Store) -> Vec<String> {
    store.services.keys().map(ToString::to_string).collect()
}

fn service_port(store: &Store, name: &str) -> i32 {
    store.services[&ObjectKey::new("default", name)]
        .spec
        .as_ref()
        .unwrap()
        .ports
        .as_ref()
        .unwrap()[0]
        .port
}

fn problem_summaries(problems: &[Problem]) -> Vec<String> {
    problems
        .iter()
        .map(|problem| format!("{} {}", problem.object, problem.reason))
        .collect()
}

#[test]
fn discovery_is_recursive_and_filters_extensions() {
    let dir = TempDir::new().unwrap();
    let root = dir.path();
    write(root, "a.yaml", &service("a", 80));
    write(root, "sub/b.yml", &service("b", 80));
    write(
        root,
        "sub/deeper/c.json",
        r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"c"},"spec":{"ports":[{"port":80}]}}"#,
    );
    write(root, "upper.YAML", &service("upper", 80));
    write(root, "notes.txt", &service("text-file", 80));
    write(root, ".hidden.yaml", &service("hidden-file", 80));
    write(root, ".git/config.yaml", &service("hidden-directory", 80));

    let (store, problems) = scanned(root);

    assert_eq!(
        service_names(&store),
        vec!["default/a", "default/b", "default/c", "default/upper"]
    );
    assert_eq!(problems, vec![]);
}

#[test]
fn multi_document_and_list_files_add_every_object() {
    let dir = TempDir::new().unwrap();
    let list = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Service\n  metadata: {name: listed, namespace: team}\n  spec: {ports: [{port: 80}]}\n";
    write(
        dir.path(),
        "all.yaml",
        &format!(
            "{}---\n{}---\n{list}",
            service("one", 80),
            service("two", 80)
        ),
    );

    let (store, problems) = scanned(dir.path());

    assert_eq!(
        service_names(&store),
        vec!["default/one", "default/two", "team/listed"]
    );
    assert_eq!(problems, vec![]);
}

#[test]
fn broken_file_keeps_its_last_valid_objects() {
    let dir = TempDir::new().unwrap();
    let root = dir.path();
    write(root, "web.yaml", &service("web", 80));
    let mut set = ManifestSet::new(root).unwrap();
    set.rescan(&Changes::default()).unwrap();

    write(
        root,
        "web.yaml",
        &format!("{}---\n{BROKEN}", service("web", 81)),
    );
    assert!(set.rescan(&Changes::default()).unwrap());
    let (store, problems) = set.build();

    assert_eq!(
        service_port(&store, "web"),
        80,
        "the last valid version stays"
    );
    assert_eq!(
        problem_summaries(&problems),
        vec!["File web.yaml InvalidManifest"]
    );
    let message = &problems[0].message;
    assert!(
        message.starts_with("document 2: invalid YAML at line 11, column 18: "),
        "{message}"
    );
    assert!(
        message.contains("its last valid version (1 object) stays in effect"),
        "{message}"
    );

    write(root, "web.yaml", &service("web", 82));
    assert!(set.rescan(&Changes::default()).unwrap());
    let (store, problems) = set.build();
    assert_eq!(service_port(&store, "web"), 82);
    assert_eq!(problems, vec![]);
}

#[test]
fn new_broken_file_adds_only_a_problem() {
    let dir = TempDir::new().unwrap();
    write(dir.path(), "good.yaml", &service("good", 80));
    write(dir.path(), "bad/new.yaml", BROKEN);

    let (store, problems) = scanned(dir.path());

    assert_eq!(service_names(&store), vec!["default/good"]);
    assert_eq!(
        problem_summaries(&problems),
        vec!["File bad/new.yaml InvalidManifest"]
    );
    assert!(
        problems[0]
            .message
            .contains("adds no objects until it is fixed"),
        "{}",
        problems[0].message
    );
}

#[test]
fn invalid_utf8_is_a_file_problem() {
    let dir = TempDir::new().unwrap();
    fs::write(dir.path().join("binary.yaml"), [0xff, 0xfe, 0x00]).unwrap();

    let (_, problems) = scanned(dir.path());

    assert_eq!(
        problem_summaries(&problems),
        vec!["File binary.yaml InvalidManifest"]
    );
    assert!(problems[0].message.contains("not valid UTF-8"));
}

#[test]
fn duplicate_object_first_path_wins() {
    let dir = TempDir::new().unwrap();
    write(dir.path(), "b.yaml", &service("web", 81));
    write(dir.path(), "a.yaml", &service("web", 80));
    write(
        dir.path(),
        "c.yaml",
        &format!("{}---\n{}", service("twice", 80), service("twice", 81)),
    );

    let (store, problems) = scanned(dir.path());

    assert_eq!(service_port(&store, "web"), 80);
    assert_eq!(service_port(&store, "twice"), 80);
    assert_eq!(
        problem_summaries(&problems),
        vec!["File b.yaml DuplicateObject", "File c.yaml DuplicateObject"]
    );
    assert_eq!(
        problems[0].message,
        "Service default/web is already defined in a.yaml, which comes first in path order; this definition is ignored"
    );
    assert!(problems[1].message.contains("earlier in this file"));
}

#[test]
fn same_file_through_symlinks_counts_once() {
    let dir = TempDir::new().unwrap();
    let root = dir.path();
    // The layout of a ConfigMap volume: visible symlinks into a hidden, versioned directory.
    write(root, "..2025_01_01/web.yaml", &service("web", 80));
    std::os::unix::fs::symlink("..2025_01_01", root.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/web.yaml", root.join("web.yaml")).unwrap();
    // A second visible path to one file.
    write(root, "real/api.yaml", &service("api", 80));
    std::os::unix::fs::symlink("real", root.join("alias")).unwrap();

    let (store, problems) = scanned(root);

    assert_eq!(service_names(&store), vec!["default/api", "default/web"]);
    assert_eq!(problems, vec![]);
}

#[test]
fn symlink_loop_does_not_stop_the_scan() {
    let dir = TempDir::new().unwrap();
    write(dir.path(), "sub/web.yaml", &service("web", 80));
    std::os::unix::fs::symlink("..", dir.path().join("sub/loop")).unwrap();

    let (store, problems) = scanned(dir.path());

    assert_eq!(service_names(&store), vec!["default/web"]);
    assert_eq!(problems, vec![]);
}

#[test]
fn rescan_of_unchanged_content_reports_no_change() {
    let dir = TempDir::new().unwrap();
    write(dir.path(), "web.yaml", &service("web", 80));
    let mut set = ManifestSet::new(dir.path()).unwrap();
    assert!(set.rescan(&Changes::default()).unwrap());

    assert!(!set.rescan(&Changes::default()).unwrap());
    let everything = Changes {
        all: true,
        ..Changes::default()
    };
    assert!(
        !set.rescan(&everything).unwrap(),
        "same bytes are no change"
    );
    // The same bytes written again get a new modification time, and still are no change.
    write(dir.path(), "web.yaml", &service("web", 80));
    assert!(!set.rescan(&everything).unwrap());
}

#[test]
fn deleted_file_drops_its_objects() {
    let dir = TempDir::new().unwrap();
    write(dir.path(), "a.yaml", &service("a", 80));
    write(dir.path(), "b.yaml", BROKEN);
    let mut set = ManifestSet::new(dir.path()).unwrap();
    set.rescan(&Changes::default()).unwrap();

    fs::remove_file(dir.path().join("a.yaml")).unwrap();
    fs::remove_file(dir.path().join("b.yaml")).unwrap();
    assert!(set.rescan(&Changes::default()).unwrap());
    let (store, problems) = set.build();

    assert!(store.is_empty());
    assert_eq!(problems, vec![]);
    assert_eq!(set.file_count(), 0);
}

#[test]
fn missing_or_file_root_is_an_error() {
    let dir = TempDir::new().unwrap();
    let missing = ManifestSet::new(&dir.path().join("missing")).unwrap_err();
    assert!(
        missing
            .to_string()
            .starts_with("failed to read the manifest directory"),
        "{missing}"
    );
    write(dir.path(), "file.yaml", "");
    let file = ManifestSet::new(&dir.path().join("file.yaml")).unwrap_err();
    assert!(file.to_string().ends_with("not a directory"), "{file}");
}

#[test]
fn removed_root_keeps_the_last_objects() {
    let dir = TempDir::new().unwrap();
    let root = dir.path().join("manifests");
    write(&root, "web.yaml", &service("web", 80));
    let mut set = ManifestSet::new(&root).unwrap();
    set.rescan(&Changes::default()).unwrap();

    fs::remove_dir_all(&root).unwrap();

    assert!(set.rescan(&Changes::default()).is_err());
    assert_eq!(service_names(&set.build().0), vec!["default/web"]);
}

#[test]
fn compile_directory_merges_file_problems_sorted() {
    let dir = TempDir::new().unwrap();
    write(dir.path(), "z.yaml", BROKEN);
    write(dir.path(), "a.yaml", BROKEN);

    let (_, report) = compile_directory(dir.path(), &CompileOptions::default()).unwrap();

    assert_eq!(
        problem_summaries(&report.problems),
        vec!["File a.yaml InvalidManifest", "File z.yaml InvalidManifest"]
    );
    assert!(report.has_errors());
}

const INGRESS: &str = r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web}
spec:
  ingressClassName: gangway
  defaultBackend: {service: {name: web, port: {number: 80}}}
"#;

#[test]
fn missing_ingress_class_is_a_warning() {
    let dir = TempDir::new().unwrap();
    write(dir.path(), "ingress.yaml", INGRESS);

    let (_, report) = compile_directory(dir.path(), &CompileOptions::default()).unwrap();

    let problem = report
        .problems
        .iter()
        .find(|problem| problem.reason == "NoIngressClass")
        .expect("a NoIngressClass problem");
    assert_eq!(problem.severity, Severity::Warning);
    assert!(
        problem
            .message
            .contains("no IngressClass has spec.controller gangway.dev/ingress-controller"),
        "{}",
        problem.message
    );
    assert!(!report.has_errors());
}

#[test]
fn ingress_class_of_ours_silences_the_warning() {
    let dir = TempDir::new().unwrap();
    write(dir.path(), "ingress.yaml", INGRESS);
    write(
        dir.path(),
        "class.yaml",
        "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: gangway}\n\
         spec: {controller: gangway.dev/ingress-controller}\n",
    );

    let (_, report) = compile_directory(dir.path(), &CompileOptions::default()).unwrap();

    let reasons: Vec<&str> = report.problems.iter().map(|p| p.reason.as_str()).collect();
    assert!(!reasons.contains(&"NoIngressClass"), "{reasons:?}");
}

/// A provider running on a temporary directory, stopped on drop.
struct Watched {
    dir: TempDir,
    live: Arc<Live>,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Watched {
    fn start(files: &[(&str, &str)]) -> Self {
        let dir = TempDir::new().unwrap();
        for (relative, text) in files {
            write(dir.path(), relative, text);
        }
        let live = Arc::new(Live::new(Arc::new(Metrics::new())));
        let provider =
            ManifestProvider::start(dir.path(), CompileOptions::default(), live.clone()).unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(provider.run(shutdown.clone()));
        Self {
            dir,
            live,
            shutdown,
            task: Some(task),
        }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn generation(&self) -> u64 {
        self.live.snapshot().generation
    }

    /// Polls the live report until `condition` holds, failing after [`PUBLISH_WAIT`].
    async fn wait_for(&self, what: &str, condition: impl Fn(&StatusReport) -> bool) {
        let started = Instant::now();
        while !condition(&self.live.report()) {
            assert!(
                started.elapsed() < PUBLISH_WAIT,
                "timed out waiting for {what}; problems: {:?}",
                problem_summaries(&self.live.report().problems)
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn stop(mut self) {
        self.shutdown.cancel();
        self.task.take().unwrap().await.unwrap();
    }
}

fn has_problem(report: &StatusReport, summary: &str) -> bool {
    problem_summaries(&report.problems)
        .iter()
        .any(|found| found == summary)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_publishes_first_snapshot_on_start() {
    let watched = Watched::start(&[("web.yaml", &service("web", 80)), ("bad.yaml", BROKEN)]);

    assert_eq!(watched.generation(), 1);
    assert!(watched.live.is_ready());
    assert!(has_problem(
        &watched.live.report(),
        "File bad.yaml InvalidManifest"
    ));
    watched.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_sees_added_rewritten_and_deleted_files() {
    let watched = Watched::start(&[("web.yaml", &service("web", 80))]);

    // Added: a second definition of the same Service proves the new file was read.
    write(watched.root(), "z-copy.yaml", &service("web", 81));
    watched
        .wait_for("the added file", |report| {
            has_problem(report, "File z-copy.yaml DuplicateObject")
        })
        .await;

    // Rewritten in place.
    write(watched.root(), "z-copy.yaml", BROKEN);
    watched
        .wait_for("the rewritten file", |report| {
            has_problem(report, "File z-copy.yaml InvalidManifest")
        })
        .await;

    // Deleted.
    fs::remove_file(watched.root().join("z-copy.yaml")).unwrap();
    watched
        .wait_for("the deleted file", |report| report.problems.is_empty())
        .await;
    watched.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_follows_renames_and_editor_saves() {
    let watched = Watched::start(&[("old.yaml", BROKEN)]);

    fs::rename(
        watched.root().join("old.yaml"),
        watched.root().join("new.yaml"),
    )
    .unwrap();
    watched
        .wait_for("the renamed file", |report| {
            has_problem(report, "File new.yaml InvalidManifest")
                && !has_problem(report, "File old.yaml InvalidManifest")
        })
        .await;

    // Editors write a hidden temporary file and rename it over the original.
    write(watched.root(), ".new.yaml.swp", &service("web", 80));
    fs::rename(
        watched.root().join(".new.yaml.swp"),
        watched.root().join("new.yaml"),
    )
    .unwrap();
    watched
        .wait_for("the file saved by rename", |report| {
            report.problems.is_empty()
        })
        .await;
    watched.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_follows_configmap_volume_updates() {
    // The kubelet updates a ConfigMap volume by writing a new hidden directory, pointing a
    // temporary symlink at it and renaming that symlink over `..data`. The visible paths
    // never change, only what they resolve to.
    let watched = Watched::start(&[("..2025_01/web.yaml", BROKEN)]);
    let root = watched.root().to_owned();
    std::os::unix::fs::symlink("..2025_01", root.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/web.yaml", root.join("web.yaml")).unwrap();
    watched
        .wait_for("the first ConfigMap version", |report| {
            has_problem(report, "File web.yaml InvalidManifest")
        })
        .await;

    write(&root, "..2025_02/web.yaml", &service("web", 80));
    std::os::unix::fs::symlink("..2025_02", root.join("..data_tmp")).unwrap();
    fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
    fs::remove_dir_all(root.join("..2025_01")).unwrap();
    watched
        .wait_for("the second ConfigMap version", |report| {
            report.problems.is_empty()
        })
        .await;
    watched.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_sees_directories_added_and_removed() {
    let watched = Watched::start(&[]);

    fs::create_dir(watched.root().join("team")).unwrap();
    write(watched.root(), "team/nested/bad.yaml", BROKEN);
    watched
        .wait_for("the file in a new directory", |report| {
            has_problem(report, "File team/nested/bad.yaml InvalidManifest")
        })
        .await;

    fs::remove_dir_all(watched.root().join("team")).unwrap();
    watched
        .wait_for("the removed directory", |report| report.problems.is_empty())
        .await;
    watched.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_publishes_once_per_write() {
    let watched = Watched::start(&[("web.yaml", &service("web", 80))]);
    let first = watched.generation();

    write(watched.root(), "web.yaml", BROKEN);
    watched
        .wait_for("the write", |report| !report.problems.is_empty())
        .await;
    // Let the events of the write and of the provider's own read arrive and be handled.
    tokio::time::sleep(Duration::from_millis(300)).await;

    assert_eq!(watched.generation(), first + 1);
    watched.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_stops_on_cancel() {
    let watched = Watched::start(&[]);
    let stopped = tokio::time::timeout(PUBLISH_WAIT, watched.stop()).await;
    assert!(stopped.is_ok(), "the provider did not stop after cancel");
}
