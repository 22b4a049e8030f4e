//! Where backups live: `<prefix>/<namespace>/<store>/<UTC timestamp>/{dump.zst,manifest.json}` in
//! an S3 bucket (object_store; static keys from the environment or the ambient credentials chain)
//! or a GCS bucket ([`super::gcs`]; a service-account key file or workload identity).

use std::{path::PathBuf, sync::Arc};

use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt, aws::AmazonS3Builder, path::Path};

use super::{
    Error,
    gcs::{Auth, GcsConfig, GcsStore, Retry},
    manifest::{MANIFEST, Manifest},
};

/// The destination flags, shared by `aienv backup`, `aienv restore` and the CronJob builder.
/// Exactly one of `--bucket` (S3) and `--gcs-bucket` (GCS) is set; the `--s3-*` flags apply to S3
/// only, the `--gcs-*` flags to GCS only.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct DestinationArgs {
    /// S3 bucket (`spec.destination.s3.bucket`).
    #[arg(long, alias = "s3-bucket", env = "AIENV_BACKUP_BUCKET")]
    pub bucket: Option<String>,
    /// Key prefix inside the bucket (S3 or GCS).
    #[arg(long, env = "AIENV_BACKUP_PREFIX", default_value = "aienv")]
    pub prefix: String,
    /// S3 endpoint for S3-compatible servers (MinIO, Ceph); AWS when unset.
    #[arg(long, env = "AIENV_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    #[arg(long, env = "AIENV_S3_REGION", default_value = "us-east-1")]
    pub s3_region: String,
    /// Path-style requests (`endpoint/bucket/key`), as most S3-compatible servers want.
    #[arg(long, env = "AIENV_S3_PATH_STYLE", default_value_t = false)]
    pub s3_path_style: bool,
    /// Static keys (from a Secret); without them the ambient chain (web identity / IRSA, instance
    /// metadata) is used.
    #[arg(long, env = "AWS_ACCESS_KEY_ID", hide_env_values = true)]
    pub s3_access_key_id: Option<String>,
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub s3_secret_access_key: Option<String>,
    /// GCS bucket (`spec.destination.gcs.bucket`).
    #[arg(long, env = "AIENV_GCS_BUCKET")]
    pub gcs_bucket: Option<String>,
    /// GCS JSON API endpoint (`scheme://host[:port]`, e.g. an emulator); Google's when unset.
    #[arg(long, env = "AIENV_GCS_ENDPOINT")]
    pub gcs_endpoint: Option<String>,
    /// Service-account JSON key file, e.g. a Secret's key mounted as a file. Without it (and
    /// without `--gcs-anonymous`) the ambient credentials are used: workload identity through the
    /// metadata server.
    #[arg(long, env = "GOOGLE_APPLICATION_CREDENTIALS")]
    pub gcs_credentials_file: Option<PathBuf>,
    /// No credentials at all (an emulator, a public bucket); never asks a metadata server.
    #[arg(long, env = "AIENV_GCS_ANONYMOUS", default_value_t = false)]
    pub gcs_anonymous: bool,
}

pub struct Destination {
    pub store: Arc<dyn ObjectStore>,
    pub prefix: String,
}

impl Destination {
    /// S3 when `--bucket` is set, GCS when `--gcs-bucket` is; refused when both or neither are.
    pub async fn open(args: &DestinationArgs) -> Result<Self, Error> {
        let store: Arc<dyn ObjectStore> = match (&args.bucket, &args.gcs_bucket) {
            (Some(bucket), None) => Arc::new(open_s3(args, bucket)?),
            (None, Some(bucket)) => Arc::new(open_gcs(args, bucket).await?),
            (Some(_), Some(_)) => {
                return Err(Error::Storage(
                    "both an S3 bucket (--bucket, AIENV_BACKUP_BUCKET) and a GCS bucket (--gcs-bucket, AIENV_GCS_BUCKET) are set: set one".into(),
                ));
            }
            (None, None) => {
                return Err(Error::Storage(
                    "no bucket: set --bucket (AIENV_BACKUP_BUCKET) for S3 or --gcs-bucket (AIENV_GCS_BUCKET) for GCS".into(),
                ));
            }
        };
        Ok(Self {
            store,
            prefix: args.prefix.trim_matches('/').to_string(),
        })
    }

    /// The folder of one store's backups.
    pub fn store_folder(&self, namespace: &str, store: &str) -> Path {
        Path::from(format!("{}/{namespace}/{store}", self.prefix))
    }

    /// Every complete backup (one with a manifest) of a store, oldest first. Prefixes without a
    /// manifest are incomplete uploads and do not exist here.
    pub async fn list(&self, namespace: &str, store: &str) -> Result<Vec<Manifest>, Error> {
        let folder = self.store_folder(namespace, store);
        let objects: Vec<_> = self
            .store
            .list(Some(&folder))
            .try_collect()
            .await
            .map_err(|e| Error::Storage(e.to_string()))?;
        let mut out = Vec::new();
        for o in objects
            .iter()
            .filter(|o| o.location.filename() == Some(MANIFEST))
        {
            let bytes = self
                .store
                .get(&o.location)
                .await
                .map_err(|e| Error::Storage(e.to_string()))?
                .bytes()
                .await
                .map_err(|e| Error::Storage(e.to_string()))?;
            let m: Manifest = serde_json::from_slice(&bytes).map_err(|e| {
                Error::Storage(format!("{} is not a backup manifest: {e}", o.location))
            })?;
            out.push(m);
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }
}

/// Credentials come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (a Secret) or the ambient chain
/// (web identity, instance metadata).
pub(crate) fn open_s3(
    args: &DestinationArgs,
    bucket: &str,
) -> Result<object_store::aws::AmazonS3, Error> {
    let mut b = AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .with_region(&args.s3_region)
        .with_virtual_hosted_style_request(!args.s3_path_style);
    if let (Some(id), Some(secret)) = (&args.s3_access_key_id, &args.s3_secret_access_key) {
        b = b.with_access_key_id(id).with_secret_access_key(secret);
    }
    if let Some(e) = &args.s3_endpoint {
        b = b.with_endpoint(e).with_allow_http(e.starts_with("http://"));
    }
    b.build().map_err(|e| Error::Storage(e.to_string()))
}

/// Anonymous, a key file, or workload identity, in that order of precedence.
async fn open_gcs(args: &DestinationArgs, bucket: &str) -> Result<GcsStore, Error> {
    let auth = match (&args.gcs_anonymous, &args.gcs_credentials_file) {
        (true, _) => Auth::Anonymous,
        (false, Some(path)) => Auth::CredentialsFile(path.clone()),
        (false, None) => Auth::Ambient,
    };
    GcsStore::open(GcsConfig {
        bucket: bucket.to_string(),
        endpoint: args.gcs_endpoint.clone(),
        auth,
        retry: Retry::default(),
    })
    .await
    .map_err(Error::Storage)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn exactly_one_bucket_is_set() {
        let both = DestinationArgs {
            bucket: Some("a".into()),
            gcs_bucket: Some("b".into()),
            gcs_anonymous: true,
            ..Default::default()
        };
        let e = Destination::open(&both).await.err().unwrap();
        assert!(
            matches!(e, Error::Storage(_)) && e.to_string().contains("set one"),
            "{e}"
        );
        let e = Destination::open(&DestinationArgs::default())
            .await
            .err()
            .unwrap();
        assert!(e.to_string().contains("--gcs-bucket"), "{e}");
    }

    #[tokio::test]
    async fn an_anonymous_gcs_destination_opens_without_any_request() {
        // An endpoint nothing listens on: opening must not reach it, nor a metadata server.
        let args = DestinationArgs {
            gcs_bucket: Some("b".into()),
            gcs_endpoint: Some("http://127.0.0.1:9".into()),
            gcs_anonymous: true,
            prefix: "/p/".into(),
            ..Default::default()
        };
        let dest = Destination::open(&args).await.unwrap();
        assert_eq!(dest.prefix, "p");
        assert_eq!(dest.store.to_string(), "GCS(gs://b)");
    }
}
