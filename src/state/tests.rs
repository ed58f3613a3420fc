use super::*;

/// A state.json as gitopsd 0.1 (before coalesced writes) wrote it, with its per-source
/// `metrics` block and the kustomization's `target` path.
const PREVIOUS_FORMAT: &str = include_str!("testdata/state-0.1.json");

fn store_with(text: &str) -> (tempfile::TempDir, Arc<StateStore>) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("state.json"), text).unwrap();
    let store = StateStore::open(dir.path());
    (dir, store)
}

#[test]
fn a_file_of_the_previous_format_loads() {
    let (dir, store) = store_with(PREVIOUS_FORMAT);
    store.read(|st| {
        let s = &st.sources["default/web"];
        assert_eq!(
            s.revision.as_ref().map(|r| r.0.as_str()),
            Some("master@sha1:a98632f2f2142cf5c8fc025745788e037b3103cf")
        );
        assert_eq!(s.artifact.as_ref().unwrap().size, 172);
        assert_eq!(s.conditions[0].status, "True");
        assert_eq!(s.metrics, None, "counters are not state");
        let k = &st.kustomizations["default/web/app"];
        assert_eq!(
            k.target.as_deref(),
            Some("/var/lib/gitopsd/state/rendered/default/web/app.yaml")
        );
        assert_eq!(k.inventory.len(), 1);
        assert_eq!(k.objects, 1);
    });
    // Loading alone writes nothing; the first real change rewrites it without counters.
    assert_eq!(store.writes(), 0);
    store.update_source("default/web", |s| s.suspended = true);
    assert_eq!(store.writes(), 1);
    let written = std::fs::read_to_string(dir.path().join("state.json")).unwrap();
    assert!(!written.contains("fetchesTotal"), "{written}");
    assert!(written.contains("\"suspended\": true"));
}

#[test]
fn a_change_of_attempt_times_only_writes_nothing() {
    let (dir, store) = store_with(PREVIOUS_FORMAT);
    let file = dir.path().join("state.json");
    let before = std::fs::metadata(&file).unwrap().modified().unwrap();
    store.update_source("default/web", |s| {
        s.last_attempt_time = Some("2030-01-01T00:00:00Z".into());
        s.last_success_time = Some("2030-01-01T00:00:00Z".into());
        set_condition(
            &mut s.conditions,
            "Ready",
            true,
            "Succeeded",
            "stored artifact for revision 'master@sha1:a98632f2f2142cf5c8fc025745788e037b3103cf'",
        );
    });
    store.update_kustomization("default/web/app", |k| {
        k.last_success_time = Some("2030-01-01T00:00:00Z".into());
    });
    assert_eq!(store.writes(), 0);
    assert_eq!(
        std::fs::metadata(&file).unwrap().modified().unwrap(),
        before
    );
    // The status API still sees the new times.
    store.read(|st| {
        assert_eq!(
            st.sources["default/web"].last_attempt_time.as_deref(),
            Some("2030-01-01T00:00:00Z")
        )
    });

    // A failure is a durable change.
    store.update_source("default/web", |s| {
        s.last_error = Some("cannot fetch".into());
    });
    assert_eq!(store.writes(), 1);
}

#[tokio::test]
async fn changes_made_while_the_writer_is_busy_are_written_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::open(dir.path());
    for i in 0..100 {
        store.update_source(&format!("default/s{i}"), |s| s.name = format!("s{i}"));
    }
    // Nothing is written on the async thread itself: the writer task does it, once.
    store.flush().await;
    assert_eq!(store.writes(), 1);
    let text = std::fs::read_to_string(dir.path().join("state.json")).unwrap();
    let state: State = serde_json::from_str(&text).unwrap();
    assert_eq!(state.sources.len(), 100);
    // A flush with nothing new writes nothing.
    store.flush().await;
    assert_eq!(store.writes(), 1);
}
