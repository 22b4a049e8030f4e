//! Reading and waiting for conditions of any aienv kind.

use std::{fmt::Debug, time::Duration};

use aienv::api::common::HasConditions;
use anyhow::Result;
use kube::Api;
use serde::de::DeserializeOwned;

use crate::testenv::wait_for;

/// (status, reason, message) of the condition `type_`.
pub fn condition<K: HasConditions>(obj: &K, type_: &str) -> Option<(String, String, String)> {
    obj.conditions()
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// Wait (up to `timeout`) until `name`'s condition `type_` has `status` and `reason`; returns the
/// object. On timeout the last conditions are printed.
pub async fn wait_condition<K>(
    api: &Api<K>,
    timeout: Duration,
    name: &str,
    type_: &str,
    status: &str,
    reason: &str,
) -> Result<K>
where
    K: kube::Resource + HasConditions + Clone + DeserializeOwned + Debug,
{
    let what = format!("{name}: {type_}={status} ({reason})");
    let res = wait_for(timeout, &what, || async {
        let o = api.get(name).await?;
        Ok(condition(&o, type_)
            .filter(|(s, r, _)| s == status && r == reason)
            .map(|_| o))
    })
    .await;
    if res.is_err() {
        let o = api.get(name).await?;
        eprintln!("last conditions of {name}: {:#?}", o.conditions());
    }
    res
}
