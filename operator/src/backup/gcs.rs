//! Google Cloud Storage as an [`ObjectStore`], over gcloud-storage (GCS's JSON API; object_store's
//! own GCS client speaks the XML API, which fake-gcs-server, the emulator the tests run against,
//! does not serve). Only what backups need: chunked resumable uploads (`put_multipart`), simple
//! puts (the manifest), streamed gets, head, list by prefix and delete; the rest is
//! `NotImplemented`.
//!
//! Every request is retried on transient errors (connection failures, timeouts, 408, 429, 5xx),
//! bounded and with exponential backoff: GCS asks clients to, and the emulator never retries on
//! its own. An upload retries chunk by chunk, from the offset GCS confirmed, so a failure costs one
//! chunk and never the whole dump; a download resumes from the byte it reached.

use std::{fmt, future::Future, path::PathBuf, sync::Arc, time::Duration};

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt, stream::BoxStream};
use gcloud_storage::{
    client::{
        Client, ClientConfig,
        google_cloud_auth::{credentials::CredentialsFile, error::Error as AuthError},
    },
    http::{
        Error as GcsError,
        objects::{
            Object,
            delete::DeleteObjectRequest,
            download::Range as GcsRange,
            get::GetObjectRequest,
            list::ListObjectsRequest,
            upload::{Media, UploadObjectRequest, UploadType},
        },
        resumable_upload_client::{ChunkSize, ResumableUploadClient, UploadStatus},
    },
};
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
    UploadPart, path::Path,
};

const STORE: &str = "GCS";
/// A resumable upload's chunks but the last must be multiples of 256 KiB.
pub const CHUNK_ALIGN: usize = 256 * 1024;

/// How requests are retried on transient errors.
#[derive(Clone, Debug)]
pub struct Retry {
    /// Tries of one request (one chunk), the first included.
    pub max_attempts: u32,
    /// The wait after the first failure; doubled after each further one, up to `max_delay`.
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            max_attempts: 8,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(16),
        }
    }
}

impl Retry {
    /// The wait after failed attempt `attempt` (1-based), with jitter so that many Jobs that
    /// failed together do not retry together.
    fn delay(&self, attempt: u32) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(1 << attempt.saturating_sub(1).min(16))
            .min(self.max_delay);
        exp.mul_f64(rand::random_range(0.5..=1.0))
    }
}

/// How the client authenticates.
#[derive(Clone, Debug)]
pub enum Auth {
    /// No credentials at all (the emulator). Never asks a metadata server for a token.
    Anonymous,
    /// A service-account JSON key file (from a Secret).
    CredentialsFile(PathBuf),
    /// The ambient credentials: workload identity (the GKE metadata server), or
    /// `GOOGLE_APPLICATION_CREDENTIALS` / the gcloud well-known file when set.
    Ambient,
}

#[derive(Clone, Debug)]
pub struct GcsConfig {
    pub bucket: String,
    /// `scheme://host[:port]` of the JSON API; Google's when `None`.
    pub endpoint: Option<String>,
    pub auth: Auth,
    pub retry: Retry,
}

/// A GCS bucket as an [`ObjectStore`].
#[derive(Clone)]
pub struct GcsStore {
    client: Client,
    bucket: String,
    endpoint: String,
    retry: Retry,
}

impl fmt::Debug for GcsStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GcsStore")
            .field("bucket", &self.bucket)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for GcsStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GCS(gs://{})", self.bucket)
    }
}

impl GcsStore {
    /// Build the client. With [`Auth::Anonymous`] nothing is fetched; with a credentials file a
    /// first token is fetched from the file's token endpoint; [`Auth::Ambient`] asks the metadata
    /// server (workload identity). Errors never hold key material.
    pub async fn open(config: GcsConfig) -> Result<Self, String> {
        crate::install_crypto_provider();
        // Timeouts, so a stalled connection fails (and is retried) instead of hanging the Job; no
        // overall timeout: a download streams for as long as the dump is.
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| format!("GCS HTTP client: {e}"))?;
        let http = reqwest_middleware::ClientBuilder::new(http).build();
        let base = || {
            let mut c = ClientConfig {
                http: Some(http.clone()),
                ..Default::default()
            };
            if let Some(e) = &config.endpoint {
                c.storage_endpoint = e.trim_end_matches('/').to_string();
            }
            c
        };
        let endpoint = base().storage_endpoint;
        let client_config = match &config.auth {
            Auth::Anonymous => base().anonymous(),
            Auth::CredentialsFile(path) => {
                let creds = CredentialsFile::new_from_file(path.to_string_lossy().into_owned())
                    .await
                    .map_err(|e| format!("GCS credentials file {}: {e}", path.display()))?;
                auth_retry(&config.retry, || base().with_credentials(creds.clone()))
                    .await
                    .map_err(|e| format!("GCS credentials file {}: {e}", path.display()))?
            }
            Auth::Ambient => auth_retry(&config.retry, || base().with_auth())
                .await
                .map_err(|e| {
                    format!(
                        "GCS ambient credentials (workload identity or GOOGLE_APPLICATION_CREDENTIALS): {e}"
                    )
                })?,
        };
        Ok(Self {
            client: Client::new(client_config),
            bucket: config.bucket,
            endpoint,
            retry: config.retry,
        })
    }

    fn get_request(&self, location: &Path) -> GetObjectRequest {
        GetObjectRequest {
            bucket: self.bucket.clone(),
            object: location.to_string(),
            ..Default::default()
        }
    }

    async fn metadata(&self, location: &Path) -> Result<Object> {
        let req = self.get_request(location);
        retry(&self.retry, "get object metadata", || {
            self.client.get_object(&req)
        })
        .await
        .map_err(|e| store_error(e, location))
    }
}

/// The first token fetch (token endpoint or metadata server), retried while it fails to connect.
async fn auth_retry<F, Fut>(policy: &Retry, mut f: F) -> Result<ClientConfig, AuthError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<ClientConfig, AuthError>>,
{
    let mut attempt = 1;
    loop {
        match f().await {
            Err(AuthError::HttpError(e)) if attempt < policy.max_attempts => {
                let wait = policy.delay(attempt);
                tracing::warn!(attempt, ?wait, error = %e.without_url(), "GCS token fetch failed; retrying");
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
            r => return r,
        }
    }
}

/// Whether a failed request may succeed when sent again.
pub fn is_transient(e: &GcsError) -> bool {
    match e {
        GcsError::Response(r) => r.is_retriable(),
        GcsError::HttpClient(e) | GcsError::RawResponse(e, _) => match e.status() {
            Some(s) => matches!(s.as_u16(), 408 | 429 | 500..=599),
            // No status: the connection failed, was reset or timed out, or the body broke off
            // (reqwest reports a body cut mid-stream as a decode error). Only a request that
            // could not be built would fail the same way again.
            None => !e.is_builder(),
        },
        // A token fetch (metadata server, OAuth endpoint) that failed may work next time.
        GcsError::TokenSource(_) => true,
        GcsError::HttpMiddleware(_) | GcsError::InvalidRangeHeader(_) => false,
    }
}

fn status(e: &GcsError) -> Option<u16> {
    match e {
        GcsError::Response(r) => Some(r.code),
        GcsError::HttpClient(e) | GcsError::RawResponse(e, _) => e.status().map(|s| s.as_u16()),
        _ => None,
    }
}

/// The error without request URLs: a resumable upload's session URL is a capability to write
/// the object.
fn scrub(e: GcsError) -> GcsError {
    match e {
        GcsError::HttpClient(e) => GcsError::HttpClient(e.without_url()),
        GcsError::RawResponse(e, detail) => GcsError::RawResponse(e.without_url(), detail),
        e => e,
    }
}

fn store_error(e: GcsError, location: &Path) -> object_store::Error {
    let path = location.to_string();
    let source = Box::new(scrub(e));
    match status(&source) {
        Some(404) => object_store::Error::NotFound { path, source },
        Some(412) => object_store::Error::AlreadyExists { path, source },
        _ => object_store::Error::Generic {
            store: STORE,
            source,
        },
    }
}

fn generic(message: impl Into<String>) -> object_store::Error {
    object_store::Error::Generic {
        store: STORE,
        source: message.into().into(),
    }
}

fn not_implemented(operation: &str) -> object_store::Error {
    object_store::Error::NotImplemented {
        operation: operation.to_string(),
        implementer: "aienv GcsStore".to_string(),
    }
}

/// Run `f` until it succeeds, fails for good, or has failed `max_attempts` times.
async fn retry<T, F, Fut>(policy: &Retry, what: &str, mut f: F) -> Result<T, GcsError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, GcsError>>,
{
    let mut attempt = 1;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if attempt < policy.max_attempts && is_transient(&e) => {
                let wait = policy.delay(attempt);
                tracing::warn!(what, attempt, ?wait, error = %scrub(e), "GCS request failed; retrying");
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

fn meta(o: &Object) -> Result<ObjectMeta> {
    let nanos = o
        .updated
        .or(o.time_created)
        .map(|t| t.unix_timestamp_nanos())
        .unwrap_or_default();
    let since_epoch = Duration::from_nanos(u64::try_from(nanos).unwrap_or_default());
    Ok(ObjectMeta {
        location: Path::parse(&o.name)?,
        last_modified: (std::time::UNIX_EPOCH + since_epoch).into(),
        size: u64::try_from(o.size).unwrap_or_default(),
        e_tag: Some(o.etag.clone()),
        version: Some(o.generation.to_string()),
    })
}

fn put_result(o: &Object) -> PutResult {
    PutResult {
        e_tag: Some(o.etag.clone()),
        version: Some(o.generation.to_string()),
        extensions: Default::default(),
    }
}

#[async_trait]
impl ObjectStore for GcsStore {
    /// A simple (one-request) upload: for small objects such as the manifest.
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        let if_generation_match = match opts.mode {
            PutMode::Overwrite => None,
            // Generation 0: only if there is no live object.
            PutMode::Create => Some(0),
            PutMode::Update(_) => return Err(not_implemented("put_opts with PutMode::Update")),
        };
        let req = UploadObjectRequest {
            bucket: self.bucket.clone(),
            if_generation_match,
            ..Default::default()
        };
        let body = Bytes::from(payload);
        let mut media = Media::new(location.to_string());
        media.content_length = Some(body.len() as u64);
        let upload_type = UploadType::Simple(media);
        let object = retry(&self.retry, "upload object", || {
            self.client.upload_object(&req, body.clone(), &upload_type)
        })
        .await
        .map_err(|e| store_error(e, location))?;
        Ok(put_result(&object))
    }

    /// A resumable upload: parts are sent in order as its chunks, each retried on its own.
    async fn put_multipart_opts(
        &self,
        location: &Path,
        _opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        let req = UploadObjectRequest {
            bucket: self.bucket.clone(),
            ..Default::default()
        };
        let upload_type = UploadType::Simple(Media::new(location.to_string()));
        let session = retry(&self.retry, "start resumable upload", || {
            self.client.prepare_resumable_upload(&req, &upload_type)
        })
        .await
        .map_err(|e| store_error(e, location))?;
        Ok(Box::new(GcsUpload {
            chunks: Arc::new(Chunks {
                session,
                retry: self.retry.clone(),
            }),
            location: location.clone(),
            held: None,
            offset: 0,
            previous: None,
        }))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        if options.if_match.is_some()
            || options.if_none_match.is_some()
            || options.if_modified_since.is_some()
            || options.if_unmodified_since.is_some()
            || options.version.is_some()
        {
            return Err(not_implemented("conditional or versioned get"));
        }
        let object = self.metadata(location).await?;
        let meta = meta(&object)?;
        let range = match &options.range {
            Some(r) => r.as_range(meta.size).map_err(|e| generic(e.to_string()))?,
            None => 0..meta.size,
        };
        let payload = if options.head {
            futures::stream::empty().boxed()
        } else {
            // The generation is pinned: a resumed download never mixes two versions.
            let req = GetObjectRequest {
                generation: Some(object.generation),
                ..self.get_request(location)
            };
            download(
                self.client.clone(),
                req,
                range.clone(),
                self.retry.clone(),
                location.clone(),
            )
        };
        Ok(GetResult {
            payload: GetResultPayload::Stream(payload),
            meta,
            range,
            attributes: Default::default(),
            extensions: Default::default(),
        })
    }

    /// Deletes one by one; an object already gone counts as deleted (a retried delete whose
    /// first try went through).
    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        let this = self.clone();
        locations
            .then(move |location| {
                let this = this.clone();
                async move {
                    let location = location?;
                    let req = DeleteObjectRequest {
                        bucket: this.bucket.clone(),
                        object: location.to_string(),
                        ..Default::default()
                    };
                    match retry(&this.retry, "delete object", || {
                        this.client.delete_object(&req)
                    })
                    .await
                    {
                        Ok(()) => Ok(location),
                        Err(e) if status(&e) == Some(404) => Ok(location),
                        Err(e) => Err(store_error(e, &location)),
                    }
                }
            })
            .boxed()
    }

    /// Every object under `prefix` (as a folder: `a/b` lists `a/b/…`, never `a/bc`), page by page.
    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        let prefix = prefix
            .map(|p| p.to_string())
            .filter(|p| !p.is_empty())
            .map(|p| format!("{p}/"));
        let this = self.clone();
        // State: the next page's token; `None` once the last page was read.
        futures::stream::try_unfold(Some(None::<String>), move |token| {
            let this = this.clone();
            let prefix = prefix.clone();
            async move {
                let Some(page_token) = token else {
                    return Ok::<_, object_store::Error>(None);
                };
                let req = ListObjectsRequest {
                    bucket: this.bucket.clone(),
                    prefix,
                    page_token,
                    ..Default::default()
                };
                let page = retry(&this.retry, "list objects", || {
                    this.client.list_objects(&req)
                })
                .await
                .map_err(|e| store_error(e, &Path::from(req.prefix.clone().unwrap_or_default())))?;
                let items: Vec<Result<ObjectMeta>> =
                    page.items.unwrap_or_default().iter().map(meta).collect();
                let next = page.next_page_token.filter(|t| !t.is_empty()).map(Some);
                Ok(Some((futures::stream::iter(items), next)))
            }
        })
        .try_flatten()
        .boxed()
    }

    async fn list_with_delimiter(&self, _prefix: Option<&Path>) -> Result<ListResult> {
        Err(not_implemented("list_with_delimiter"))
    }

    async fn copy_opts(&self, _from: &Path, _to: &Path, _options: CopyOptions) -> Result<()> {
        Err(not_implemented("copy"))
    }
}

/// A streamed download of `range` that, after a transient failure, resumes at the byte it
/// reached (bounded tries per resumption, reset by progress).
fn download(
    client: Client,
    req: GetObjectRequest,
    range: std::ops::Range<u64>,
    policy: Retry,
    location: Path,
) -> BoxStream<'static, Result<Bytes>> {
    type Body = BoxStream<'static, Result<Bytes, GcsError>>;
    struct State {
        client: Client,
        req: GetObjectRequest,
        pos: u64,
        end: u64,
        body: Option<Body>,
        failures: u32,
        policy: Retry,
        location: Path,
    }
    let state = State {
        client,
        req,
        pos: range.start,
        end: range.end,
        body: None,
        failures: 0,
        policy,
        location,
    };
    futures::stream::try_unfold(state, |mut s| async move {
        loop {
            if s.pos >= s.end {
                return Ok(None);
            }
            let failure = match s.body.as_mut() {
                None => {
                    let range = GcsRange(Some(s.pos), Some(s.end - 1));
                    match s.client.download_streamed_object(&s.req, &range).await {
                        Ok(body) => {
                            s.body = Some(body.boxed());
                            continue;
                        }
                        Err(e) => e,
                    }
                }
                Some(body) => match body.next().await {
                    Some(Ok(chunk)) => {
                        s.pos += chunk.len() as u64;
                        s.failures = 0;
                        return Ok(Some((chunk, s)));
                    }
                    Some(Err(e)) => e,
                    None => {
                        // Ended early: the connection closed without an error.
                        s.body = None;
                        s.failures += 1;
                        if s.failures >= s.policy.max_attempts {
                            return Err(generic(format!(
                                "the download of {} ended at byte {} of {}",
                                s.location, s.pos, s.end
                            )));
                        }
                        continue;
                    }
                },
            };
            s.body = None;
            s.failures += 1;
            if s.failures >= s.policy.max_attempts || !is_transient(&failure) {
                return Err(store_error(failure, &s.location));
            }
            let wait = s.policy.delay(s.failures);
            tracing::warn!(pos = s.pos, ?wait, error = %scrub(failure), "GCS download failed; resuming");
            tokio::time::sleep(wait).await;
        }
    })
    .boxed()
}

/// What the chunks of one resumable upload share.
struct Chunks {
    session: ResumableUploadClient,
    retry: Retry,
}

impl Chunks {
    /// Send `data` at `start` (the last chunk when `total` is set), retrying from the offset the
    /// server confirmed. Returns the object once the last chunk is in.
    async fn send(&self, data: Bytes, start: u64, total: Option<u64>) -> Result<Option<Object>> {
        let end = start + data.len() as u64;
        let mut confirmed = start;
        let mut attempt = 1;
        loop {
            let rest = data.slice((confirmed - start) as usize..);
            let range = if rest.is_empty() {
                // Only the last chunk can be empty: `bytes */total` finishes the upload.
                ChunkSize::new(confirmed, confirmed, total)
            } else {
                ChunkSize::new(confirmed, end - 1, total)
            };
            let failure = match self.session.upload_multiple_chunk(rest, &range).await {
                Ok(UploadStatus::Ok(object)) if total.is_some() => return Ok(Some(object)),
                Ok(UploadStatus::Ok(_)) => {
                    return Err(generic("GCS finished the upload before its last chunk"));
                }
                Ok(UploadStatus::ResumeIncomplete(r)) => {
                    let persisted = r.last_byte + 1;
                    if persisted >= end && total.is_none() {
                        return Ok(None);
                    }
                    if persisted < start {
                        return Err(generic(format!(
                            "GCS holds {persisted} bytes of the upload, {start} were confirmed before"
                        )));
                    }
                    // GCS kept part of the chunk: send the rest.
                    confirmed = persisted.min(end);
                    None
                }
                Ok(UploadStatus::NotStarted) if start == 0 => {
                    confirmed = 0;
                    None
                }
                Ok(UploadStatus::NotStarted) => {
                    return Err(generic(format!(
                        "GCS holds nothing of the upload, {start} bytes were confirmed before"
                    )));
                }
                Err(e) => Some(e),
            };
            if attempt >= self.retry.max_attempts {
                let what =
                    format!("the chunk at byte {start} failed {attempt} times, the last time with");
                return Err(match failure {
                    Some(e) => generic(format!("{what}: {}", scrub(e))),
                    None => generic(format!("{what} only part of it stored")),
                });
            }
            if let Some(e) = failure {
                if !is_transient(&e) {
                    return Err(generic(format!("the chunk at byte {start}: {}", scrub(e))));
                }
                let wait = self.retry.delay(attempt);
                tracing::warn!(start, attempt, ?wait, error = %scrub(e), "GCS chunk failed; retrying");
                tokio::time::sleep(wait).await;
            }
            attempt += 1;
        }
    }
}

/// One resumable upload. The newest part is held back until the next one arrives or the upload
/// completes, because GCS must be told the total size with the last chunk; the parts' futures
/// (which `WriteMultipart` runs concurrently) send their chunks strictly in order, each waiting
/// for the one before.
struct GcsUpload {
    chunks: Arc<Chunks>,
    location: Path,
    held: Option<Bytes>,
    /// Bytes handed to chunks already sent or on their way.
    offset: u64,
    /// The outcome of the chunk sent last.
    previous: Option<tokio::sync::oneshot::Receiver<Result<(), String>>>,
}

impl fmt::Debug for GcsUpload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the session URL: it is a capability to write the object.
        f.debug_struct("GcsUpload")
            .field("location", &self.location)
            .field("offset", &self.offset)
            .finish_non_exhaustive()
    }
}

async fn after(previous: Option<tokio::sync::oneshot::Receiver<Result<(), String>>>) -> Result<()> {
    match previous {
        None => Ok(()),
        Some(rx) => match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(generic(format!("an earlier chunk failed: {e}"))),
            Err(_) => Err(generic("an earlier chunk was abandoned")),
        },
    }
}

#[async_trait]
impl MultipartUpload for GcsUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let Some(part) = self.held.replace(Bytes::from(data)) else {
            return Box::pin(async { Ok(()) });
        };
        if part.len() % CHUNK_ALIGN != 0 {
            let len = part.len();
            return Box::pin(async move {
                Err(generic(format!(
                    "a GCS upload's parts but the last must be multiples of 256 KiB, not {len} bytes"
                )))
            });
        }
        let start = self.offset;
        self.offset += part.len() as u64;
        let (done, rx) = tokio::sync::oneshot::channel();
        let previous = self.previous.replace(rx);
        let chunks = self.chunks.clone();
        Box::pin(async move {
            let result = match after(previous).await {
                Ok(()) => chunks.send(part, start, None).await.map(|_| ()),
                Err(e) => Err(e),
            };
            let _ = done.send(result.as_ref().map(|_| ()).map_err(|e| e.to_string()));
            result
        })
    }

    async fn complete(&mut self) -> Result<PutResult> {
        after(self.previous.take()).await?;
        let last = self.held.take().unwrap_or_default();
        let start = self.offset;
        let total = start + last.len() as u64;
        self.offset = total;
        let object = self
            .chunks
            .send(last, start, Some(total))
            .await?
            .ok_or_else(|| generic("GCS did not finish the upload"))?;
        // A chunk stored twice (a retry after a lost answer, on a server that appends) or lost
        // must fail the upload here, not pass as a good object.
        if u64::try_from(object.size).ok() != Some(total) {
            return Err(generic(format!(
                "GCS stored {} bytes of {} for {}",
                object.size, total, self.location
            )));
        }
        Ok(put_result(&object))
    }

    async fn abort(&mut self) -> Result<()> {
        self.held = None;
        self.chunks
            .session
            .clone()
            .cancel()
            .await
            .map_err(|e| generic(format!("cancelling the upload: {}", scrub(e))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter() {
        let r = Retry {
            max_attempts: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
        };
        for (attempt, full) in [(1, 100), (2, 200), (3, 400), (4, 800), (5, 1000), (9, 1000)] {
            let d = r.delay(attempt).as_millis() as u64;
            assert!((full / 2..=full).contains(&d), "attempt {attempt}: {d} ms");
        }
    }

    #[test]
    fn server_errors_and_throttling_are_transient_client_errors_are_not() {
        let response = |code| {
            GcsError::Response(
                serde_json::from_value(serde_json::json!({
                    "code": code, "message": "m", "errors": []
                }))
                .unwrap(),
            )
        };
        for code in [408, 429, 500, 503] {
            assert!(is_transient(&response(code)), "{code}");
        }
        for code in [400, 401, 403, 404, 412] {
            assert!(!is_transient(&response(code)), "{code}");
        }
    }
}
