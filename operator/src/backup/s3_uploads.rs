//! Incomplete S3 multipart uploads: a backup killed mid-upload (SIGKILL, OOM, node loss) leaves
//! its parts stored and billed but invisible to object listing. object_store has no public
//! ListMultipartUploads, so it is signed here with object_store's own SigV4 signer and
//! credential provider (the same keys or ambient chain as the upload) and sent with reqwest;
//! the abort is object_store's `MultipartStore::abort_multipart`.

use object_store::{
    aws::{AmazonS3, AwsAuthorizer},
    client::HttpRequestBody,
    multipart::MultipartStore,
    path::Path,
};

use super::{Error, storage::DestinationArgs};

/// One multipart upload that was started and neither completed nor aborted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upload {
    pub key: String,
    pub upload_id: String,
    /// As the server reports it.
    pub initiated: jiff::Timestamp,
}

pub struct Uploads {
    s3: AmazonS3,
    /// `https://host/bucket` (path style) or `https://bucket.host`, as object_store addresses it.
    bucket_url: url::Url,
    region: String,
    http: reqwest::Client,
}

impl Uploads {
    /// The same bucket, endpoint and credentials as `storage::Destination::open`.
    /// S3 only: `None` for a GCS destination (resumable upload sessions expire on their own).
    pub fn open(args: &DestinationArgs) -> Result<Option<Self>, Error> {
        let Some(bucket) = args.bucket.as_deref() else {
            return Ok(None);
        };
        let s3 = super::storage::open_s3(args, bucket)?;
        // object_store's rule: a given endpoint already names the bucket when virtual-hosted.
        let bucket_url = match (&args.s3_endpoint, args.s3_path_style) {
            (Some(e), true) => format!("{}/{bucket}", e.trim_end_matches('/')),
            (Some(e), false) => e.trim_end_matches('/').to_string(),
            (None, true) => format!("https://s3.{}.amazonaws.com/{bucket}", args.s3_region),
            (None, false) => format!("https://{bucket}.s3.{}.amazonaws.com", args.s3_region),
        };
        let bucket_url = url::Url::parse(&bucket_url)
            .map_err(|e| Error::Storage(format!("S3 endpoint is not a URL: {e}")))?;
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(60))
            .build()
            .map_err(|e| Error::Storage(e.to_string()))?;
        Ok(Some(Self {
            s3,
            bucket_url,
            region: args.s3_region.clone(),
            http,
        }))
    }

    /// Every incomplete upload whose key starts with `prefix` (all pages).
    pub async fn list(&self, prefix: &str) -> Result<Vec<Upload>, Error> {
        let mut out = Vec::new();
        let mut markers: Option<(String, String)> = None;
        loop {
            let mut url = self.bucket_url.clone();
            {
                let mut q = url.query_pairs_mut();
                q.append_pair("uploads", "").append_pair("prefix", prefix);
                if let Some((key, id)) = &markers {
                    q.append_pair("key-marker", key)
                        .append_pair("upload-id-marker", id);
                }
            }
            let page = parse_page(&self.get(url).await?)?;
            out.extend(page.uploads);
            match (
                page.truncated,
                page.next_key_marker,
                page.next_upload_id_marker,
            ) {
                (true, Some(k), Some(i)) => markers = Some((k, i)),
                _ => return Ok(out),
            }
        }
    }

    pub async fn abort(&self, upload: &Upload) -> Result<(), Error> {
        self.s3
            .abort_multipart(&Path::from(upload.key.as_str()), &upload.upload_id)
            .await
            .map_err(|e| Error::Storage(e.to_string()))
    }

    /// Abort the incomplete uploads under `prefix` initiated before `cutoff`; their keys.
    pub async fn abort_initiated_before(
        &self,
        prefix: &str,
        cutoff: jiff::Timestamp,
    ) -> Result<Vec<String>, Error> {
        let mut aborted = Vec::new();
        for u in self.list(prefix).await? {
            if u.initiated < cutoff {
                self.abort(&u).await?;
                aborted.push(u.key);
            }
        }
        Ok(aborted)
    }

    /// A GET signed with the destination's credentials; the body on success.
    async fn get(&self, url: url::Url) -> Result<String, Error> {
        let credential = self
            .s3
            .credentials()
            .get_credential()
            .await
            .map_err(|e| Error::Storage(e.to_string()))?;
        let mut req = http::Request::builder()
            .method(http::Method::GET)
            .uri(url.as_str())
            .body(HttpRequestBody::empty())
            .map_err(|e| Error::Storage(e.to_string()))?;
        AwsAuthorizer::new(&credential, "s3", &self.region)
            .try_authorize(&mut req, None)
            .map_err(|e| Error::Storage(e.to_string()))?;
        let (parts, _) = req.into_parts();
        let resp = self
            .http
            .get(url.as_str())
            .headers(parts.headers)
            .send()
            .await
            .map_err(|e| Error::Storage(format!("ListMultipartUploads: {e}")))?;
        let status = resp.status();
        let body = resp
            .text()
            .await
            .map_err(|e| Error::Storage(format!("ListMultipartUploads: {e}")))?;
        if !status.is_success() {
            return Err(Error::Storage(format!(
                "ListMultipartUploads: {status}: {}",
                body.chars().take(300).collect::<String>()
            )));
        }
        Ok(body)
    }
}

struct Page {
    uploads: Vec<Upload>,
    truncated: bool,
    next_key_marker: Option<String>,
    next_upload_id_marker: Option<String>,
}

fn parse_page(xml: &str) -> Result<Page, Error> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Result {
        #[serde(default)]
        is_truncated: bool,
        next_key_marker: Option<String>,
        next_upload_id_marker: Option<String>,
        #[serde(default, rename = "Upload")]
        uploads: Vec<Raw>,
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Raw {
        key: String,
        upload_id: String,
        initiated: String,
    }
    let bad = |e: String| Error::Storage(format!("ListMultipartUploads answer: {e}"));
    let r: Result = quick_xml::de::from_str(xml).map_err(|e| bad(e.to_string()))?;
    let uploads = r
        .uploads
        .into_iter()
        .map(|u| {
            Ok(Upload {
                initiated: u
                    .initiated
                    .parse()
                    .map_err(|e| bad(format!("Initiated {:?}: {e}", u.initiated)))?,
                key: u.key,
                upload_id: u.upload_id,
            })
        })
        .collect::<std::result::Result<_, Error>>()?;
    Ok(Page {
        uploads,
        truncated: r.is_truncated,
        next_key_marker: r.next_key_marker.filter(|s| !s.is_empty()),
        next_upload_id_marker: r.next_upload_id_marker.filter(|s| !s.is_empty()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_truncated_page_gives_its_uploads_and_the_next_markers() {
        // The shape AWS documents for ListMultipartUploads (entities escaped).
        let page = parse_page(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Bucket>b</Bucket><KeyMarker></KeyMarker><UploadIdMarker></UploadIdMarker>
  <NextKeyMarker>aienv/ns/s/20261202T000000Z/dump.zst</NextKeyMarker>
  <NextUploadIdMarker>id-2</NextUploadIdMarker><Prefix>aienv/</Prefix>
  <MaxUploads>2</MaxUploads><IsTruncated>true</IsTruncated>
  <Upload><Key>aienv/ns/s/20261201T000000Z/dump.zst</Key><UploadId>id-1</UploadId>
    <Initiator><ID>x</ID></Initiator><StorageClass>STANDARD</StorageClass>
    <Initiated>2026-12-01T00:00:05.000Z</Initiated></Upload>
  <Upload><Key>aienv/ns/s&amp;t/20261202T000000Z/dump.zst</Key><UploadId>id-2</UploadId>
    <Initiated>2026-12-02T00:00:05Z</Initiated></Upload>
</ListMultipartUploadsResult>"#,
        )
        .unwrap();
        assert!(page.truncated);
        assert_eq!(
            page.next_key_marker.as_deref(),
            Some("aienv/ns/s/20261202T000000Z/dump.zst")
        );
        assert_eq!(page.next_upload_id_marker.as_deref(), Some("id-2"));
        assert_eq!(page.uploads.len(), 2);
        assert_eq!(
            page.uploads[1].key,
            "aienv/ns/s&t/20261202T000000Z/dump.zst"
        );
        assert_eq!(
            page.uploads[0].initiated,
            "2026-12-01T00:00:05Z".parse::<jiff::Timestamp>().unwrap()
        );
        let empty = parse_page(
            "<ListMultipartUploadsResult><IsTruncated>false</IsTruncated></ListMultipartUploadsResult>",
        )
        .unwrap();
        assert!(empty.uploads.is_empty() && !empty.truncated);
    }
}
