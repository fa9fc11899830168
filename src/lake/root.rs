//! Where a lake lives: a local folder or an object store (`s3://bucket/prefix`, `gs://…`, `az://…`),
//! and the one handle every part of the engine reaches it through.
//!
//! The layout below the root is the same on both: the tables, `_haochaping/` (logs, snapshots, the
//! analytics state, the alert outboxes) and `tables/` (derived tables). Everything is put whole
//! (`object_store`'s put is atomic on both), so readers never see half a file.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path as FsPath, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, ObjectStoreScheme, PutPayload};
use serde::{Deserialize, Serialize};
use url::Url;

use super::LakeError;

/// Where the lake is, as an operator writes it: a folder (`lake`, `/data/lake`, `file:///data/lake`)
/// or an object store URL (`s3://bucket/prefix`, `gs://bucket/prefix`, `az://container/prefix`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LakeLocation {
    Local(PathBuf),
    Remote(Url),
}

impl FromStr for LakeLocation {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim().is_empty() {
            return Err("the lake's location is empty".into());
        }
        if !s.contains("://") {
            return Ok(Self::Local(PathBuf::from(s)));
        }
        let url = Url::parse(s).map_err(|e| format!("{s}: not a URL ({e})"))?;
        match ObjectStoreScheme::parse(&url) {
            Ok((ObjectStoreScheme::Local, _)) => url
                .to_file_path()
                .map(Self::Local)
                .map_err(|()| format!("{s}: not a local path")),
            Ok((
                ObjectStoreScheme::AmazonS3
                | ObjectStoreScheme::GoogleCloudStorage
                | ObjectStoreScheme::MicrosoftAzure,
                _,
            )) => Ok(Self::Remote(url)),
            _ => Err(format!(
                "{s}: a lake is a folder or an s3://, gs:// or az:// URL"
            )),
        }
    }
}

impl fmt::Display for LakeLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Local(path) => write!(f, "{}", path.display()),
            Self::Remote(url) => write!(f, "{url}"),
        }
    }
}

impl Serialize for LakeLocation {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for LakeLocation {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl Default for LakeLocation {
    fn default() -> Self {
        Self::Local(PathBuf::from("lake"))
    }
}

impl From<PathBuf> for LakeLocation {
    fn from(path: PathBuf) -> Self {
        Self::Local(path)
    }
}

impl From<&FsPath> for LakeLocation {
    fn from(path: &FsPath) -> Self {
        Self::Local(path.to_owned())
    }
}

impl LakeLocation {
    /// The folder of a local lake.
    pub fn local_path(&self) -> Option<&FsPath> {
        match self {
            Self::Local(path) => Some(path),
            Self::Remote(_) => None,
        }
    }
}

/// An open lake root: the store rooted at the lake, and what DataFusion needs to read it.
#[derive(Clone)]
pub struct LakeRoot {
    /// Rooted at the lake: paths are relative to the root (`evaluations/dt=…/…`).
    store: Arc<dyn ObjectStore>,
    /// The store of the URL's bucket (or the local file system), for DataFusion's registry, which
    /// keys stores by scheme and bucket and hands them whole paths.
    base: Arc<dyn ObjectStore>,
    /// The root as a URL ending in `/`.
    url: Url,
    /// Set for a local lake.
    local: Option<PathBuf>,
}

impl fmt::Debug for LakeRoot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LakeRoot({self})")
    }
}

impl fmt::Display for LakeRoot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.local {
            Some(path) => write!(f, "{}", path.display()),
            None => write!(f, "{}", self.url),
        }
    }
}

fn location_error(location: &impl fmt::Display, why: impl fmt::Display) -> LakeError {
    LakeError::Location(location.to_string(), why.to_string())
}

impl LakeRoot {
    /// Opens a local folder (created if missing).
    pub fn local(root: impl Into<PathBuf>) -> Result<Self, LakeError> {
        let root = root.into();
        let io = |source| LakeError::Io {
            path: root.clone(),
            source,
        };
        std::fs::create_dir_all(&root).map_err(io)?;
        let root = root.canonicalize().map_err(io)?;
        let store = LocalFileSystem::new_with_prefix(&root)
            .map_err(|e| location_error(&root.display(), e))?;
        let url = Url::from_directory_path(&root)
            .map_err(|()| location_error(&root.display(), "not an absolute path"))?;
        Ok(Self {
            store: Arc::new(store),
            base: Arc::new(LocalFileSystem::new()),
            url,
            local: Some(root),
        })
    }

    /// Opens a lake where `location` says. An object store is configured from its provider's
    /// environment variables (`AWS_*`, `GOOGLE_*`, `AZURE_*`, as `object_store` reads them), then
    /// from `options` (`lake.storage`: `aws_endpoint`, `aws_allow_http`, …), which win. An unknown
    /// option is an error naming it. Nothing is contacted yet: a wrong bucket or credential shows at
    /// the first read or write.
    pub fn open(
        location: &LakeLocation,
        options: &BTreeMap<String, String>,
    ) -> Result<Self, LakeError> {
        let url = match location {
            LakeLocation::Local(path) => {
                if let Some(key) = options.keys().next() {
                    return Err(location_error(
                        location,
                        format!("lake.storage.{key}: storage options are for object stores"),
                    ));
                }
                return Self::local(path);
            }
            LakeLocation::Remote(url) => url,
        };
        let (scheme, prefix) =
            ObjectStoreScheme::parse(url).map_err(|e| location_error(location, e))?;
        let unknown = |key: &str| {
            location_error(
                location,
                format!("lake.storage.{key}: not an option of this store"),
            )
        };
        // Each provider's builder: its variables, the URL, then the options by the builder's names.
        macro_rules! build {
            ($builder:ty) => {{
                let mut builder = <$builder>::from_env().with_url(url.as_str());
                for (key, value) in options {
                    builder = builder.with_config(key.parse().map_err(|_| unknown(key))?, value);
                }
                Arc::new(builder.build().map_err(|e| location_error(location, e))?)
            }};
        }
        let base: Arc<dyn ObjectStore> = match scheme {
            ObjectStoreScheme::AmazonS3 => build!(object_store::aws::AmazonS3Builder),
            ObjectStoreScheme::GoogleCloudStorage => {
                build!(object_store::gcp::GoogleCloudStorageBuilder)
            }
            ObjectStoreScheme::MicrosoftAzure => build!(object_store::azure::MicrosoftAzureBuilder),
            other => {
                return Err(location_error(
                    location,
                    format!("{other:?} is not a lake's store"),
                ))
            }
        };
        let store: Arc<dyn ObjectStore> = if prefix.as_ref().is_empty() {
            base.clone()
        } else {
            Arc::new(PrefixStore::new(base.clone(), prefix))
        };
        let mut url = url.clone();
        if !url.path().ends_with('/') {
            url.set_path(&format!("{}/", url.path()));
        }
        Ok(Self {
            store,
            base,
            url,
            local: None,
        })
    }

    /// An object store given whole (in-memory in tests), at `url` for DataFusion.
    pub fn with_store(store: Arc<dyn ObjectStore>, url: Url) -> Self {
        Self {
            store: store.clone(),
            base: store,
            url,
            local: None,
        }
    }

    /// The store, rooted at the lake.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The folder of a local lake.
    pub fn local_path(&self) -> Option<&FsPath> {
        self.local.as_deref()
    }

    /// The URL of a folder below the root (ending in `/`), as DataFusion's listing tables take it.
    pub fn folder_url(&self, folder: &str) -> Result<Url, LakeError> {
        self.url
            .join(&format!("{}/", folder.trim_matches('/')))
            .map_err(|e| location_error(self, e))
    }

    /// Lets a DataFusion session read this lake's URLs.
    pub fn register(&self, ctx: &datafusion::prelude::SessionContext) {
        ctx.register_object_store(&self.url, self.base.clone());
    }

    /// Every object below `folder` (all depths); none when it does not exist.
    pub async fn list(&self, folder: &str) -> Result<Vec<ObjectMeta>, LakeError> {
        let prefix = Path::from(folder);
        match self.store.list(Some(&prefix)).try_collect().await {
            Ok(objects) => Ok(objects),
            Err(object_store::Error::NotFound { .. }) => Ok(Vec::new()),
            Err(e) => Err(e.into()),
        }
    }

    /// The names of the folders right below `folder`.
    pub async fn child_folders(&self, folder: &str) -> Result<Vec<String>, LakeError> {
        let prefix = Path::from(folder);
        let listing = match self.store.list_with_delimiter(Some(&prefix)).await {
            Ok(listing) => listing,
            Err(object_store::Error::NotFound { .. }) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        Ok(listing
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_owned))
            .collect())
    }

    /// Whether anything lies below `folder`.
    pub async fn has_objects(&self, folder: &str) -> Result<bool, LakeError> {
        let prefix = Path::from(folder);
        let mut listing = self.store.list(Some(&prefix));
        match listing.try_next().await {
            Ok(first) => Ok(first.is_some()),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// An object's bytes; none when it does not exist.
    pub async fn get(&self, relative: &str) -> Result<Option<Bytes>, LakeError> {
        match self.store.get(&Path::from(relative)).await {
            Ok(result) => Ok(Some(result.bytes().await?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Puts an object whole, replacing any before it. On a local lake the file and its folder are
    /// fsynced before this returns, as an object store's put is durable when it returns.
    pub async fn put(&self, relative: &str, bytes: Bytes) -> Result<(), LakeError> {
        self.store
            .put(&Path::from(relative), PutPayload::from(bytes))
            .await?;
        if let Some(root) = &self.local {
            let file = root.join(relative);
            let folder = file.parent().unwrap_or(root).to_owned();
            tokio::task::spawn_blocking(move || {
                for path in [&file, &folder] {
                    std::fs::File::open(path)
                        .and_then(|f| f.sync_all())
                        .map_err(|source| LakeError::Io {
                            path: path.clone(),
                            source,
                        })?;
                }
                Ok::<_, LakeError>(())
            })
            .await
            .map_err(|e| location_error(self, e))??;
        }
        Ok(())
    }

    /// Deletes an object if it exists.
    pub async fn delete(&self, relative: &str) -> Result<(), LakeError> {
        match self.store.delete(&Path::from(relative)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_are_folders_or_object_store_urls() {
        let local = |p: &str| Ok(LakeLocation::Local(PathBuf::from(p)));
        let remote = |u: &str| Ok(LakeLocation::Remote(Url::parse(u).unwrap()));
        let cases: [(&str, Result<LakeLocation, ()>); 9] = [
            ("lake", local("lake")),
            ("/data/lake", local("/data/lake")),
            ("file:///data/lake", local("/data/lake")),
            ("s3://bucket/prefix", remote("s3://bucket/prefix")),
            ("s3://bucket", remote("s3://bucket")),
            ("gs://bucket/a/b", remote("gs://bucket/a/b")),
            ("az://container/lake", remote("az://container/lake")),
            ("ftp://host/lake", Err(())),
            ("", Err(())),
        ];
        for (text, expected) in cases {
            assert_eq!(
                text.parse::<LakeLocation>().map_err(|_| ()),
                expected,
                "{text}"
            );
        }
    }

    #[test]
    fn a_location_round_trips_through_its_text() {
        for text in ["lake", "/data/lake", "s3://bucket/prefix"] {
            let location: LakeLocation = text.parse().unwrap();
            assert_eq!(
                location.to_string().parse::<LakeLocation>().unwrap(),
                location
            );
        }
    }

    #[test]
    fn storage_options_are_checked_against_the_store() {
        let s3: LakeLocation = "s3://bucket/prefix".parse().unwrap();
        let options = |k: &str, v: &str| BTreeMap::from([(k.to_owned(), v.to_owned())]);
        let opened = LakeRoot::open(&s3, &options("aws_endpoint", "http://127.0.0.1:1"));
        assert!(opened.is_ok(), "{opened:?}");
        let root = opened.unwrap();
        assert_eq!(root.to_string(), "s3://bucket/prefix/");
        assert_eq!(
            root.folder_url("evaluations").unwrap().as_str(),
            "s3://bucket/prefix/evaluations/"
        );
        let wrong = LakeRoot::open(&s3, &options("aws_endpont", "x")).unwrap_err();
        assert!(
            wrong.to_string().contains("lake.storage.aws_endpont"),
            "{wrong}"
        );
        let dir = tempfile::tempdir().unwrap();
        let local = LakeLocation::Local(dir.path().to_owned());
        let wrong = LakeRoot::open(&local, &options("aws_endpoint", "x")).unwrap_err();
        assert!(wrong.to_string().contains("object stores"), "{wrong}");
    }

    #[tokio::test]
    async fn a_local_root_lists_gets_puts_and_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let root = LakeRoot::local(dir.path().join("lake")).unwrap();
        assert!(root.list("tables/x").await.unwrap().is_empty());
        assert!(!root.has_objects("tables").await.unwrap());
        assert_eq!(root.get("tables/x/a.json").await.unwrap(), None);
        root.put("tables/x/month=1/a.parquet", Bytes::from_static(b"1"))
            .await
            .unwrap();
        root.put("tables/x/month=2/b.parquet", Bytes::from_static(b"22"))
            .await
            .unwrap();
        assert!(root.has_objects("tables").await.unwrap());
        let mut sizes: Vec<_> = root
            .list("tables/x")
            .await
            .unwrap()
            .into_iter()
            .map(|m| (m.location.to_string(), m.size))
            .collect();
        sizes.sort();
        assert_eq!(
            sizes,
            [
                ("tables/x/month=1/a.parquet".to_owned(), 1),
                ("tables/x/month=2/b.parquet".to_owned(), 2)
            ]
        );
        let mut folders = root.child_folders("tables/x").await.unwrap();
        folders.sort();
        assert_eq!(folders, ["month=1", "month=2"]);
        root.delete("tables/x/month=1/a.parquet").await.unwrap();
        root.delete("tables/x/month=1/a.parquet").await.unwrap();
        assert_eq!(root.get("tables/x/month=1/a.parquet").await.unwrap(), None);
        assert_eq!(
            root.get("tables/x/month=2/b.parquet").await.unwrap(),
            Some(Bytes::from_static(b"22"))
        );
    }
}
