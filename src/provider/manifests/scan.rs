//! The manifest files under one directory, and the last valid objects of each.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use walkdir::WalkDir;

use super::ManifestError;
use crate::provider::parse::{Object, parse_manifests};
use crate::status::Problem;
use crate::store::{ObjectKey, ObjectRef, Store};

/// Extensions of the files read as manifests, compared without regard to case.
const MANIFEST_EXTENSIONS: [&str; 3] = ["yaml", "yml", "json"];

/// Kind given to problems about a whole file, as [`Problem::object`] documents.
pub const FILE_KIND: &str = "File";

/// Files that a rescan must read again even when their metadata looks unchanged.
#[derive(Debug, Default)]
pub struct Changes {
    /// Read every file again.
    pub all: bool,
    /// Paths, relative to the directory, that an event named.
    pub paths: HashSet<PathBuf>,
}

/// The metadata that shows whether a file may have changed since it was last read. The inode
/// catches files replaced by rename, as editors and ConfigMap volume updates do, even when
/// size and modification time stay the same.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Fingerprint {
    device: u64,
    inode: u64,
    len: u64,
    modified: Option<SystemTime>,
}

impl Fingerprint {
    fn new(metadata: &fs::Metadata) -> Self {
        Self {
            device: metadata.dev(),
            inode: metadata.ino(),
            len: metadata.len(),
            modified: metadata.modified().ok(),
        }
    }
}

/// One manifest file as last read.
#[derive(Debug)]
struct ManifestFile {
    fingerprint: Fingerprint,
    /// Bytes of the last read, valid or not, so that reading the same bytes again is no change.
    content: Option<Vec<u8>>,
    /// Objects of the last version in which every document parsed; `None` until one did.
    objects: Option<Vec<Object>>,
    /// Failures of the last read, one message per failed document; empty when it parsed.
    errors: Vec<String>,
}

/// The manifest files under a directory, read recursively.
///
/// Hidden files and directories (names starting with `.`) are skipped, so a ConfigMap volume
/// counts each key once: through its visible symlink, and not again under `..data`. Symlinks
/// are followed, and two paths that reach the same file count once, under the first path in
/// sorted order.
#[derive(Debug)]
pub struct ManifestSet {
    root: PathBuf,
    /// Files by path relative to `root`, sorted, which fixes the order of [`Self::build`].
    files: BTreeMap<PathBuf, ManifestFile>,
}

impl ManifestSet {
    /// Creates an empty set for `root`, which must be a directory.
    pub fn new(root: &Path) -> Result<Self, ManifestError> {
        let root = std::path::absolute(root).map_err(|source| ManifestError::ReadDirectory {
            path: root.to_owned(),
            source,
        })?;
        let metadata = fs::metadata(&root).map_err(|source| ManifestError::ReadDirectory {
            path: root.clone(),
            source,
        })?;
        if !metadata.is_dir() {
            return Err(ManifestError::NotADirectory { path: root });
        }
        Ok(Self {
            root,
            files: BTreeMap::new(),
        })
    }

    /// Returns the absolute path of the directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Lists the directory again and reads new files, files named in `changes` and files whose
    /// metadata changed. Files that are gone are dropped. Returns true when the objects or the
    /// problems may differ from the last [`Self::build`].
    pub fn rescan(&mut self, changes: &Changes) -> Result<bool, ManifestError> {
        let listed = self.list()?;
        let mut changed = false;

        let before = self.files.len();
        self.files.retain(|path, _| listed.contains_key(path));
        if self.files.len() != before {
            changed = true;
        }

        for (relative, fingerprint) in listed {
            let forced = changes.all || changes.paths.contains(&relative);
            if let Some(file) = self.files.get(&relative)
                && !forced
                && file.fingerprint == fingerprint
            {
                continue;
            }
            changed |= self.read(relative, fingerprint);
        }
        Ok(changed)
    }

    /// Lists manifest files with their fingerprints, keyed by path relative to the root.
    fn list(&self) -> Result<BTreeMap<PathBuf, Fingerprint>, ManifestError> {
        // The root itself may be gone (deleted or unmounted): report it instead of dropping
        // every object, so the caller keeps the last snapshot.
        let root_metadata =
            fs::metadata(&self.root).map_err(|source| ManifestError::ReadDirectory {
                path: self.root.clone(),
                source,
            })?;
        if !root_metadata.is_dir() {
            return Err(ManifestError::NotADirectory {
                path: self.root.clone(),
            });
        }

        let mut listed = BTreeMap::new();
        let mut seen_files: HashMap<(u64, u64), PathBuf> = HashMap::new();
        let walker = WalkDir::new(&self.root)
            .follow_links(true)
            .sort_by_file_name()
            .into_iter()
            .filter_entry(|entry| entry.depth() == 0 || !is_hidden(entry.file_name()));
        for entry in walker {
            let entry = match entry {
                Ok(entry) => entry,
                Err(error) => {
                    // A symlink loop or an unreadable subdirectory: the rest still counts.
                    tracing::warn!(
                        path = %error.path().unwrap_or(&self.root).display(),
                        %error,
                        "failed to read part of the manifest directory; skipping it"
                    );
                    continue;
                }
            };
            if !entry.file_type().is_file() || !has_manifest_extension(entry.path()) {
                continue;
            }
            let metadata = match entry.metadata() {
                Ok(metadata) => metadata,
                Err(error) => {
                    tracing::warn!(path = %entry.path().display(), %error, "failed to read file metadata; skipping it");
                    continue;
                }
            };
            let Ok(relative) = entry.path().strip_prefix(&self.root) else {
                continue;
            };
            let fingerprint = Fingerprint::new(&metadata);
            let identity = (fingerprint.device, fingerprint.inode);
            if let Some(first) = seen_files.get(&identity) {
                tracing::debug!(
                    path = %relative.display(),
                    first = %first.display(),
                    "skipping a second path to the same manifest file"
                );
                continue;
            }
            seen_files.insert(identity, relative.to_owned());
            listed.insert(relative.to_owned(), fingerprint);
        }
        Ok(listed)
    }

    /// Reads and parses one file. Returns true when its content differs from the last read.
    fn read(&mut self, relative: PathBuf, fingerprint: Fingerprint) -> bool {
        let (content, errors, objects) = match fs::read(self.root.join(&relative)) {
            Ok(content) => {
                if let Some(previous) = self.files.get_mut(&relative)
                    && previous.content.as_ref() == Some(&content)
                {
                    previous.fingerprint = fingerprint;
                    return false;
                }
                let (errors, objects) = parse(&content);
                (Some(content), errors, objects)
            }
            // Forget the content so that the next successful read counts as a change.
            Err(error) => (
                None,
                vec![format!("failed to read the file: {error}")],
                Vec::new(),
            ),
        };
        let previous = self.files.remove(&relative);
        let objects = if errors.is_empty() {
            Some(objects)
        } else {
            previous.and_then(|previous| previous.objects)
        };
        self.files.insert(
            relative,
            ManifestFile {
                fingerprint,
                content,
                objects,
                errors,
            },
        );
        true
    }

    /// Builds the store from the last valid objects of every file, and the problems of the
    /// files: documents that failed, and objects that an earlier file already defines.
    pub fn build(&self) -> (Store, Vec<Problem>) {
        let mut store = Store::default();
        let mut problems = Vec::new();
        let mut defined_in: HashMap<ObjectRef, &Path> = HashMap::new();
        for (path, file) in &self.files {
            let file_ref = file_ref(path);
            let consequence = match &file.objects {
                Some(objects) => format!(
                    "its last valid version ({}) stays in effect until it is fixed",
                    count_objects(objects.len())
                ),
                None => "the file adds no objects until it is fixed".to_owned(),
            };
            for error in &file.errors {
                problems.push(Problem::error(
                    file_ref.clone(),
                    "",
                    "InvalidManifest",
                    format!("{error}; {consequence}"),
                ));
            }
            for object in file.objects.iter().flatten() {
                let object_ref = object.object_ref();
                if let Some(first) = defined_in.get(&object_ref) {
                    let place = if *first == path.as_path() {
                        "earlier in this file".to_owned()
                    } else {
                        format!("in {}, which comes first in path order", first.display())
                    };
                    problems.push(Problem::error(
                        file_ref.clone(),
                        "",
                        "DuplicateObject",
                        format!(
                            "{object_ref} is already defined {place}; this definition is ignored"
                        ),
                    ));
                    continue;
                }
                defined_in.insert(object_ref, path);
                object.clone().insert_into(&mut store);
            }
        }
        (store, problems)
    }

    /// Returns the number of manifest files.
    pub fn file_count(&self) -> usize {
        self.files.len()
    }
}

/// Returns the reference that names a file in a problem: kind `File`, name the relative path.
pub fn file_ref(relative: &Path) -> ObjectRef {
    ObjectRef::new(
        FILE_KIND,
        ObjectKey::cluster(relative.to_string_lossy().into_owned()),
    )
}

/// Parses file content into the messages of failed documents and the objects.
fn parse(content: &[u8]) -> (Vec<String>, Vec<Object>) {
    let text = match std::str::from_utf8(content) {
        Ok(text) => text,
        Err(error) => {
            return (
                vec![format!("the file is not valid UTF-8: {error}")],
                Vec::new(),
            );
        }
    };
    let parsed = parse_manifests(text);
    let errors = parsed.errors.iter().map(ToString::to_string).collect();
    (errors, parsed.objects)
}

fn count_objects(count: usize) -> String {
    if count == 1 {
        "1 object".to_owned()
    } else {
        format!("{count} objects")
    }
}

fn is_hidden(name: &std::ffi::OsStr) -> bool {
    name.as_encoded_bytes().starts_with(b".")
}

fn has_manifest_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|extension| extension.to_str())
        .is_some_and(|extension| {
            MANIFEST_EXTENSIONS
                .iter()
                .any(|known| extension.eq_ignore_ascii_case(known))
        })
}
