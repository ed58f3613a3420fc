//! Fixture uploads shared by the object-store harnesses (SeaweedFS, Azurite).

use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

/// Runs `future` on a private runtime (tests call the harness outside any runtime).
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(future)
}

/// Uploads `objects` (key, content) through `store`.
pub fn put(store: &dyn ObjectStore, objects: &[(&str, &[u8])]) {
    block_on(async {
        for (key, content) in objects {
            store
                .put(&ObjectPath::from(*key), PutPayload::from(content.to_vec()))
                .await
                .unwrap_or_else(|e| panic!("upload {key}: {e}"));
        }
    });
}

/// Deletes `key` through `store`.
pub fn delete(store: &dyn ObjectStore, key: &str) {
    block_on(async {
        store
            .delete(&ObjectPath::from(key))
            .await
            .unwrap_or_else(|e| panic!("delete {key}: {e}"));
    });
}
