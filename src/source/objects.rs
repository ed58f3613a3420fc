//! The object-store half of `bucket` and `azblob` sources: list, compute Flux's revision,
//! download. Each kind only says how to reach its store and how its failures read (the
//! [`ObjectSource`] trait); everything that must behave the same for both lives here.
//!
//! Behaviour, after source-controller's bucket reconciler:
//! - Keys keep their prefix, in the revision and on disk (`<prefix>/app/deploy.yaml` lands at
//!   `<snapshot>/<prefix>/app/deploy.yaml`), so paths written for Flux keep working. The
//!   prefix is a plain string prefix, as S3's: `app` selects `app.yaml` and `apps/x`.
//! - The `.sourceignore` object at the root of the bucket (not of the prefix) and the source's
//!   `ignore` field decide what is left out ([`IgnoreRules::for_bucket`]); keys ending in `/`
//!   (directory markers) and the root `.sourceignore` key are never part of a snapshot.
//! - Revision: `sha256:` over the lines `"<key> <etag>\n"` sorted by key (bytewise), etags
//!   without their quotes (and, for Azure, hex-encoded: [`ObjectSource::revision_etag`]).
//!   An unchanged revision downloads nothing.
//! - Downloads run [`PARALLEL_DOWNLOADS`] at a time and stream to disk, so memory does not grow
//!   with object size. An object that changed between the listing and its download enters
//!   the snapshot and the revision with the downloaded version's etag; one that vanished is
//!   left out of both. The revision is computed from this final index.
//!
//! The fetch is async from reading the credentials ([`ObjectSource::connect`]) to the last
//! download, and runs on the daemon's runtime: no thread blocks on it. Interruption (the
//! source's `timeout`, shutdown) is watched in one place, [`fetch`], which drops the whole
//! fetch once the flag is set; that cancels the requests in flight (a Kubernetes Secret or a
//! token being read included) and aborts the listing and download tasks. Failures are
//! [`ObjectError`]s (see [`error`]): one sentence and a kind.

pub mod error;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, ObjectStore};
use sha2::{Digest, Sha256};
use tokio::task::JoinSet;

pub use self::error::{ErrorKind, ObjectError, Reason};
use super::{FetchOutcome, Revision, Snapshot, SourceError};
use crate::artifact::ignore::{IgnoreRules, SOURCE_IGNORE_FILE};

/// How many objects download at once (source-controller uses 100; past ~64 a local server
/// gains nothing and open files add up).
pub const PARALLEL_DOWNLOADS: usize = 64;

/// How many directory listings run at once while walking the bucket.
pub const PARALLEL_LISTINGS: usize = 16;

/// Objects up to this size are read whole and written with one blocking call (at most
/// [`PARALLEL_DOWNLOADS`] of them in memory at once: 4 MiB); larger ones stream to disk.
const SMALL_OBJECT_BYTES: u64 = 64 << 10;

/// The largest root `.sourceignore` read; a bigger one is an error, not a memory spike.
const MAX_SOURCEIGNORE_BYTES: usize = 1 << 20;

/// How often a running fetch looks at its interrupt flag.
const INTERRUPT_POLL: Duration = Duration::from_millis(100);

/// What a bucket-like source kind contributes to the shared fetch.
pub trait ObjectSource: Send + Sync {
    /// The key prefix the source is restricted to (a plain string prefix), if any.
    fn prefix(&self) -> Option<&str>;

    /// The source's `ignore` field.
    fn ignore(&self) -> Option<&str>;

    /// The etag as it enters the revision line, given without quotes or `W/`.
    fn revision_etag(&self, etag: &str) -> String {
        etag.to_string()
    }

    /// The store, signed in with the credentials as they are now (read again at every sync).
    fn connect(&self) -> impl Future<Output = Result<Arc<dyn ObjectStore>, ObjectError>> + Send;

    /// One sentence for a failed request, naming the endpoint and bucket, never a secret.
    fn explain_error(&self, error: &object_store::Error) -> ObjectError;

    /// Whether a "not found" answer to an object's download means the bucket or container
    /// itself is gone (a failure), rather than that one object vanished since the listing.
    fn store_missing(&self, _error: &object_store::Error) -> bool {
        false
    }

    /// The subject of every message: `bucket <name> at <endpoint>`, ...
    fn subject(&self) -> String;

    /// A failure of this source other than a request's.
    fn fail(&self, kind: ErrorKind, reason: Reason) -> ObjectError {
        ObjectError::new(self.subject(), kind, reason)
    }

    /// `<endpoint>/<bucket>`, for I/O errors.
    fn describe(&self) -> String;
}

/// The listed objects after ignore rules: key → etag as it enters the revision.
pub type Index = BTreeMap<String, String>;

/// Flux's revision of an index: `sha256:<hex>` over the sorted `"<key> <etag>\n"` lines.
pub fn revision(index: &Index) -> Revision {
    let mut hasher = Sha256::new();
    for (key, etag) in index {
        hasher.update(key.as_bytes());
        hasher.update(b" ");
        hasher.update(etag.as_bytes());
        hasher.update(b"\n");
    }
    Revision(format!("sha256:{}", hex::encode(hasher.finalize())))
}

/// An etag without its quotes and weak marker, as S3 clients (minio-go) report it.
pub fn plain_etag(etag: &str) -> &str {
    etag.trim_start_matches("W/").trim_matches('"')
}

/// The whole fetch: connect (read the credentials, build the client), list, compare with
/// `previous`, download into `scratch`. Returns as soon as `interrupt` is set (checked every
/// 100 ms), dropping whatever was in flight.
pub async fn fetch<S: ObjectSource>(
    source: &S,
    previous: Option<&Revision>,
    scratch: PathBuf,
    interrupt: &AtomicBool,
) -> Result<FetchOutcome, SourceError> {
    let work = async {
        let store = source.connect().await?;
        let index = list(source, &store).await?;
        if previous == Some(&revision(&index)) {
            return Ok(FetchOutcome::Unchanged);
        }
        tokio::fs::create_dir_all(&scratch)
            .await
            .map_err(|e| SourceError::Io {
                url: source.describe(),
                source: e,
            })?;
        let index = download_all(source, &store, index, &scratch).await?;
        Ok(FetchOutcome::Fetched {
            revision: revision(&index),
            snapshot: Snapshot::Dir(scratch),
        })
    };
    match until_interrupted(work, interrupt).await {
        Some(result) => result,
        None => Err(source
            .fail(ErrorKind::Cancelled, Reason::Interrupted)
            .into()),
    }
}

/// `work`'s output, or `None` once `interrupt` is set; `work` is dropped then.
async fn until_interrupted<T>(work: impl Future<Output = T>, interrupt: &AtomicBool) -> Option<T> {
    tokio::pin!(work);
    loop {
        if interrupt.load(Ordering::Relaxed) {
            return None;
        }
        tokio::select! {
            done = &mut work => return Some(done),
            _ = tokio::time::sleep(INTERRUPT_POLL) => {}
        }
    }
}

/// The HTTP client settings both kinds share: a 10 s connect timeout, no whole-request limit
/// (a large object may take long; the source's `timeout` bounds the sync), `allow_http`, the
/// certificates of `ca_file` (a PEM bundle) trusted besides the system's, and the proxy the
/// shared rule picks for `urls` (every host the source talks to, the endpoint first).
pub async fn client_options(
    allow_http: bool,
    ca_file: Option<&Path>,
    urls: &[&str],
) -> Result<object_store::ClientOptions, Reason> {
    let mut options = object_store::ClientOptions::new()
        .with_connect_timeout(Duration::from_secs(10))
        .with_timeout_disabled()
        .with_allow_http(allow_http);
    if let Some(path) = ca_file {
        let pem = tokio::fs::read(path).await.map_err(|source| Reason::Read {
            what: format!("cannot read caFile {}", path.display()),
            source,
        })?;
        let no_certificate = || {
            Reason::Setting(format!(
                "caFile {} holds no PEM certificate",
                path.display()
            ))
        };
        let certificates =
            object_store::Certificate::from_pem_bundle(&pem).map_err(|_| no_certificate())?;
        if certificates.is_empty() {
            return Err(no_certificate());
        }
        for certificate in certificates {
            options = options.with_root_certificate(certificate);
        }
    }
    Ok(super::proxy::object_store_options(options, urls))
}

/// How object_store retries a failed request: twice, within 20 s, so that a source's own
/// `timeout` (and the next sync) stays in charge of a server that is really down.
pub fn retry_config() -> object_store::RetryConfig {
    object_store::RetryConfig {
        max_retries: 2,
        retry_timeout: Duration::from_secs(20),
        ..object_store::RetryConfig::default()
    }
}

/// A request's clause and kind once the proxy in between (the one [`super::proxy::for_url`]
/// picks for `url`) is taken into account: when no answer came or the proxy asked for
/// credentials (`no_answer`, or kind [`ErrorKind::Proxy`]), a failure the proxy explains is
/// reworded to name it; the proxy's password is scrubbed from the clause in any case.
pub fn blame_proxy(
    kind: ErrorKind,
    clause: String,
    no_answer: bool,
    url: &str,
) -> (ErrorKind, String) {
    let Some(proxy) = super::proxy::for_url(url) else {
        return (kind, clause);
    };
    if no_answer || kind == ErrorKind::Proxy {
        if let Some(reworded) = proxy.explain(&clause) {
            return (ErrorKind::Proxy, reworded);
        }
    }
    (kind, proxy.scrub(&clause))
}

/// List everything under the prefix and apply the ignore rules.
pub async fn list<S: ObjectSource>(
    source: &S,
    store: &Arc<dyn ObjectStore>,
) -> Result<Index, ObjectError> {
    let prefix = source.prefix().unwrap_or("").trim_start_matches('/');
    let (listed, sourceignore) = tokio::join!(walk(store, prefix), read_root_sourceignore(store));
    let listed = listed.map_err(|e| source.explain_error(&e))?;
    let sourceignore = sourceignore.map_err(|e| match e {
        SmallReadError::Store(e) => source.explain_error(&e),
        SmallReadError::TooLarge => source.fail(
            ErrorKind::Config,
            Reason::Setting(format!(
                "the root {SOURCE_IGNORE_FILE} object is larger than {} KiB",
                MAX_SOURCEIGNORE_BYTES / 1024
            )),
        ),
    })?;
    let rules = IgnoreRules::for_bucket(sourceignore.as_deref(), source.ignore())
        .map_err(|e| source.fail(ErrorKind::Config, Reason::Ignore(e)))?;

    let mut index = Index::new();
    for (key, etag) in &listed {
        if key.ends_with('/') || key == SOURCE_IGNORE_FILE {
            continue;
        }
        // A directory marker reads back without its `/`: a key that other keys live below
        // cannot be a file on disk.
        let below = format!("{key}/");
        if listed
            .range(below.clone()..)
            .next()
            .is_some_and(|(k, _)| k.starts_with(&below))
        {
            continue;
        }
        if rules.is_excluded(Path::new(key), false) {
            continue;
        }
        index.insert(key.clone(), source.revision_etag(plain_etag(etag)));
    }
    Ok(index)
}

/// Every object whose key starts with `prefix` (a string prefix): key → etag as listed.
///
/// object_store lists by path segment, so the walk starts at the prefix's last complete
/// segment and descends only into directories that can hold matching keys. Directories are
/// listed concurrently.
async fn walk(
    store: &Arc<dyn ObjectStore>,
    prefix: &str,
) -> object_store::Result<BTreeMap<String, String>> {
    let start = match prefix.rfind('/') {
        Some(at) => &prefix[..at],
        None => "",
    };
    let mut found = BTreeMap::new();
    let mut pending: Vec<String> = vec![start.to_string()];
    let mut tasks: JoinSet<(String, object_store::Result<object_store::ListResult>)> =
        JoinSet::new();
    loop {
        while tasks.len() < PARALLEL_LISTINGS {
            let Some(dir) = pending.pop() else { break };
            let store = store.clone();
            tasks.spawn(async move {
                let location = (!dir.is_empty()).then(|| ObjectPath::from(dir.as_str()));
                let listed = store.list_with_delimiter(location.as_ref()).await;
                (dir, listed)
            });
        }
        let Some(done) = next(&mut tasks).await else {
            break;
        };
        let (dir, listed) = done;
        let listed = listed?;
        for meta in listed.objects {
            let key = meta.location.as_ref().to_string();
            // The marker of the listed directory itself.
            if key == dir {
                continue;
            }
            if key.starts_with(prefix) {
                found.insert(key, meta.e_tag.unwrap_or_default());
            }
        }
        for sub in listed.common_prefixes {
            let sub = sub.as_ref().to_string();
            let below = format!("{sub}/");
            if below.starts_with(prefix) || prefix.starts_with(&below) {
                pending.push(sub);
            }
        }
    }
    Ok(found)
}

/// The next finished task; `None` when none is left. A task's panic is the caller's.
async fn next<T: 'static>(tasks: &mut JoinSet<T>) -> Option<T> {
    match tasks.join_next().await? {
        Ok(value) => Some(value),
        Err(join) => std::panic::resume_unwind(join.into_panic()),
    }
}

enum SmallReadError {
    Store(object_store::Error),
    TooLarge,
}

/// The root `.sourceignore` object's text, `None` when there is none.
async fn read_root_sourceignore(
    store: &Arc<dyn ObjectStore>,
) -> Result<Option<String>, SmallReadError> {
    let location = ObjectPath::from(SOURCE_IGNORE_FILE);
    let result = match store.get_opts(&location, GetOptions::default()).await {
        Ok(result) => result,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(SmallReadError::Store(e)),
    };
    if result.meta.size > MAX_SOURCEIGNORE_BYTES as u64 {
        return Err(SmallReadError::TooLarge);
    }
    let bytes = result.bytes().await.map_err(SmallReadError::Store)?;
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

enum DownloadError {
    Store(object_store::Error),
    Io(std::io::Error),
}

/// Download every object of `index` below `dir`; returns the index as downloaded.
async fn download_all<S: ObjectSource>(
    source: &S,
    store: &Arc<dyn ObjectStore>,
    mut index: Index,
    dir: &Path,
) -> Result<Index, ObjectError> {
    let keys: Vec<String> = index.keys().cloned().collect();
    let mut tasks: JoinSet<(String, Result<Option<String>, DownloadError>)> = JoinSet::new();
    let settle = |done: (String, Result<Option<String>, DownloadError>),
                  index: &mut Index|
     -> Result<(), ObjectError> {
        let (key, result) = done;
        match result {
            Ok(Some(etag)) => {
                let etag = source.revision_etag(&etag);
                if index.get(&key) != Some(&etag) {
                    tracing::info!(key = %key, "object changed during the fetch; packing the downloaded version");
                    index.insert(key, etag);
                }
            }
            Ok(None) => {}
            Err(DownloadError::Store(e @ object_store::Error::NotFound { .. }))
                if !source.store_missing(&e) =>
            {
                tracing::info!(key = %key, "object vanished during the fetch; left out");
                index.remove(&key);
            }
            Err(DownloadError::Store(e)) => return Err(source.explain_error(&e)),
            Err(DownloadError::Io(e)) => {
                return Err(source.fail(ErrorKind::Internal, Reason::Write { key, source: e }))
            }
        }
        Ok(())
    };
    for key in keys {
        while tasks.len() >= PARALLEL_DOWNLOADS {
            match next(&mut tasks).await {
                Some(done) => settle(done, &mut index)?,
                None => break,
            }
        }
        let Some(target) = snapshot_path(dir, &key) else {
            return Err(source.fail(ErrorKind::Internal, Reason::UnsafeKey(key)));
        };
        let store = store.clone();
        tasks.spawn(async move {
            let result = download(&store, &key, &target).await;
            (key, result)
        });
    }
    while let Some(done) = next(&mut tasks).await {
        settle(done, &mut index)?;
    }
    Ok(index)
}

/// `<dir>/<key>`, when every segment of the key is a plain name.
fn snapshot_path(dir: &Path, key: &str) -> Option<PathBuf> {
    let mut path = dir.to_path_buf();
    for part in key.split('/') {
        if part.is_empty() || part == "." || part == ".." || part.contains('\0') {
            return None;
        }
        path.push(part);
    }
    Some(path)
}

/// Stream one object into `target`; the etag the server sent with it (without quotes). An
/// object gone since the listing is a `NotFound` error, which the caller tells apart from a
/// missing bucket (see [`ObjectSource::store_missing`]).
async fn download(
    store: &Arc<dyn ObjectStore>,
    key: &str,
    target: &Path,
) -> Result<Option<String>, DownloadError> {
    let result = match store
        .get_opts(&ObjectPath::from(key), GetOptions::default())
        .await
    {
        Ok(result) => result,
        Err(e) => return Err(DownloadError::Store(e)),
    };
    let etag = result
        .meta
        .e_tag
        .as_deref()
        .map(|e| plain_etag(e).to_string());
    if result.meta.size <= SMALL_OBJECT_BYTES {
        // One blocking call instead of a round trip per create, write and flush.
        let bytes = result.bytes().await.map_err(DownloadError::Store)?;
        let target = target.to_path_buf();
        tokio::task::spawn_blocking(move || {
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&target, &bytes)
        })
        .await
        .map_err(|e| DownloadError::Io(std::io::Error::other(e)))?
        .map_err(DownloadError::Io)?;
        return Ok(etag);
    }
    if let Some(parent) = target.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(DownloadError::Io)?;
    }
    let mut file = tokio::fs::File::create(target)
        .await
        .map_err(DownloadError::Io)?;
    let mut reader = tokio_util::io::StreamReader::new(result.into_stream());
    tokio::io::copy_buf(&mut reader, &mut file)
        .await
        .map_err(|e| match e.downcast::<object_store::Error>() {
            Ok(store_error) => DownloadError::Store(store_error),
            Err(e) => DownloadError::Io(e),
        })?;
    tokio::io::AsyncWriteExt::flush(&mut file)
        .await
        .map_err(DownloadError::Io)?;
    Ok(etag)
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;
    use object_store::{ObjectStoreExt, PutPayload};

    struct Fixture {
        prefix: Option<String>,
        ignore: Option<String>,
        /// `None`: connecting never finishes (a dead server).
        store: Option<Arc<dyn ObjectStore>>,
    }

    impl ObjectSource for Fixture {
        async fn connect(&self) -> Result<Arc<dyn ObjectStore>, ObjectError> {
            match &self.store {
                Some(store) => Ok(store.clone()),
                None => std::future::pending().await,
            }
        }
        fn prefix(&self) -> Option<&str> {
            self.prefix.as_deref()
        }
        fn ignore(&self) -> Option<&str> {
            self.ignore.as_deref()
        }
        fn explain_error(&self, error: &object_store::Error) -> ObjectError {
            self.fail(ErrorKind::Internal, Reason::Request(error.to_string()))
        }
        fn subject(&self) -> String {
            "memory".into()
        }
        fn describe(&self) -> String {
            "memory".into()
        }
    }

    /// Runs `future` on a runtime of the test's own.
    fn block_on<F: Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(future)
    }

    fn store(keys: &[(&str, &str)]) -> Arc<dyn ObjectStore> {
        let store = InMemory::new();
        block_on(async {
            for (key, body) in keys {
                store
                    .put(
                        &ObjectPath::from(*key),
                        PutPayload::from(body.as_bytes().to_vec()),
                    )
                    .await
                    .unwrap();
            }
        });
        Arc::new(store)
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d).unwrap() {
                let entry = entry.unwrap();
                if entry.file_type().unwrap().is_dir() {
                    stack.push(entry.path());
                } else {
                    let rel = entry.path().strip_prefix(dir).unwrap().to_owned();
                    out.push(rel.to_string_lossy().into_owned());
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn revision_is_sha256_of_sorted_lines() {
        let mut index = Index::new();
        index.insert("b".into(), "2".into());
        index.insert("a/x".into(), "1".into());
        let expected = hex::encode(Sha256::digest(b"a/x 1\nb 2\n"));
        assert_eq!(revision(&index).0, format!("sha256:{expected}"));
        assert_eq!(
            revision(&Index::new()).0,
            format!("sha256:{}", hex::encode(Sha256::digest(b"")))
        );
    }

    #[test]
    fn etags_lose_quotes() {
        assert_eq!(plain_etag("\"abc\""), "abc");
        assert_eq!(plain_etag("W/\"abc\""), "abc");
        assert_eq!(plain_etag("0x8D"), "0x8D");
    }

    #[test]
    fn prefix_is_a_string_prefix_and_keys_keep_it() {
        let store = store(&[
            ("app.yaml", "a"),
            ("apps/web/deploy.yaml", "b"),
            ("other/x.yaml", "c"),
            (".sourceignore", "*.tmp\n"),
            ("apps/web/scratch.tmp", "d"),
        ]);
        let source = Fixture {
            prefix: Some("app".into()),
            ignore: None,
            store: Some(store.clone()),
        };
        let scratch = tempfile::tempdir().unwrap();
        let flag = AtomicBool::new(false);
        let dir = scratch.path().join("snap");
        let outcome = block_on(fetch(&source, None, dir.clone(), &flag)).unwrap();
        let FetchOutcome::Fetched { revision: rev, .. } = outcome else {
            panic!("expected a fetch")
        };
        assert_eq!(files(&dir), vec!["app.yaml", "apps/web/deploy.yaml"]);
        let again = block_on(fetch(&source, Some(&rev), scratch.path().join("2"), &flag)).unwrap();
        assert!(matches!(again, FetchOutcome::Unchanged));
        assert!(!scratch.path().join("2").exists());
    }

    #[test]
    fn ignore_field_and_markers() {
        let store = store(&[
            ("dir/", ""),
            ("dir/a.yaml", "a"),
            ("dir/b.bak", "b"),
            (".sourceignore", ""),
        ]);
        let source = Fixture {
            prefix: None,
            ignore: Some("*.bak".into()),
            store: Some(store.clone()),
        };
        let index = block_on(list(&source, &store)).unwrap();
        assert_eq!(index.keys().collect::<Vec<_>>(), vec!["dir/a.yaml"]);
    }

    #[test]
    fn empty_store_gives_an_empty_snapshot() {
        let store = store(&[]);
        let source = Fixture {
            prefix: Some("nothing/".into()),
            ignore: None,
            store: Some(store.clone()),
        };
        let scratch = tempfile::tempdir().unwrap();
        let flag = AtomicBool::new(false);
        let dir = scratch.path().join("snap");
        match block_on(fetch(&source, None, dir.clone(), &flag)).unwrap() {
            FetchOutcome::Fetched { revision: rev, .. } => {
                assert_eq!(rev, revision(&Index::new()));
                assert!(files(&dir).is_empty());
            }
            FetchOutcome::Unchanged => panic!("expected a fetch"),
        }
    }

    #[test]
    fn interrupt_stops_the_fetch() {
        let store = store(&[("a", "1")]);
        let source = Fixture {
            prefix: None,
            ignore: None,
            store: Some(store.clone()),
        };
        let scratch = tempfile::tempdir().unwrap();
        let flag = AtomicBool::new(true);
        let err = block_on(fetch(&source, None, scratch.path().join("s"), &flag)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "memory: the fetch was interrupted (timeout or shutdown)"
        );
        let SourceError::Objects(err) = err else {
            panic!("an object-store error expected: {err:?}")
        };
        assert_eq!(err.kind(), ErrorKind::Cancelled);
    }

    #[test]
    fn a_connection_that_never_answers_is_interrupted() {
        // Connecting covers reading credentials (a Kubernetes Secret, a token): a dead server
        // there must not outlive the fetch's timeout.
        let source = Fixture {
            prefix: None,
            ignore: None,
            store: None,
        };
        let scratch = tempfile::tempdir().unwrap();
        let flag = AtomicBool::new(false);
        let started = std::time::Instant::now();
        let err = block_on(async {
            let timeout = async {
                tokio::time::sleep(Duration::from_millis(200)).await;
                flag.store(true, Ordering::Relaxed);
                std::future::pending::<()>().await
            };
            tokio::select! {
                result = fetch(&source, None, scratch.path().join("s"), &flag) => result,
                _ = timeout => unreachable!("the timeout never finishes"),
            }
        })
        .unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(
            err.to_string(),
            "memory: the fetch was interrupted (timeout or shutdown)"
        );
    }

    #[test]
    fn unsafe_keys_are_refused() {
        assert!(snapshot_path(Path::new("/s"), "a/../b").is_none());
        assert!(snapshot_path(Path::new("/s"), "a//b").is_none());
        assert_eq!(
            snapshot_path(Path::new("/s"), "a/b"),
            Some(PathBuf::from("/s/a/b"))
        );
    }
}
