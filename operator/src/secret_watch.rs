//! Which Secrets the controller watches, and how: only those the operator
//! creates (one watch, by its `managed-by` label) and those a ChatCluster
//! names (one watch each, by field selector on the name), and only their
//! metadata. Secret values never reach the operator through a watch; the
//! reconcile reads the few it needs by name.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use futures::channel::mpsc;
use futures::{SinkExt, Stream, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::Store;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};

use crate::api::ChatCluster;
use crate::api::{Guarded, readable};
use crate::build::secret::{generated_secret_name, jwt_secret_name};
use crate::dereference::secret_refs;

/// How often the set of named Secrets is compared with the ChatClusters.
pub const FOLLOW_EVERY: Duration = Duration::from_secs(2);

/// A Secret's metadata, as the watches deliver it.
pub type SecretMeta = PartialObjectMeta<Secret>;

/// The Secrets `cc` names that the operator does not create (those carry
/// its label and are watched by it).
pub fn named_secrets(cc: &ChatCluster) -> Vec<String> {
    let mut created = vec![generated_secret_name(cc)];
    if cc.spec.auth.signing_key_secret.is_none() {
        created.push(jwt_secret_name(cc));
    }
    secret_refs(cc)
        .into_iter()
        .map(|(name, _)| name)
        .filter(|name| !created.contains(name))
        .collect()
}

/// (namespace, name) of every Secret a ChatCluster in `clusters` names.
pub fn wanted<'a>(
    clusters: impl IntoIterator<Item = &'a ChatCluster>,
) -> BTreeSet<(String, String)> {
    clusters
        .into_iter()
        .flat_map(|cc| {
            let ns = cc.namespace().unwrap_or_default();
            named_secrets(cc)
                .into_iter()
                .map(move |name| (ns.clone(), name))
        })
        .collect()
}

/// Aborts its task when dropped.
struct Watch(tokio::task::JoinHandle<()>);

impl Drop for Watch {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn watch_one(
    client: &Client,
    ns: &str,
    name: &str,
    mut tx: mpsc::Sender<Result<SecretMeta, watcher::Error>>,
) -> Watch {
    // an Api of PartialObjectMeta makes metadata-only requests
    let api: Api<SecretMeta> = Api::namespaced(client.clone(), ns);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    Watch(tokio::spawn(async move {
        let mut events = watcher(api, config).touched_objects().boxed();
        while let Some(event) = events.next().await {
            if tx.send(event).await.is_err() {
                return;
            }
        }
    }))
}

/// Keeps one watch per named Secret while a ChatCluster in `store` names it.
async fn follow(
    client: Client,
    store: Store<Guarded>,
    tx: mpsc::Sender<Result<SecretMeta, watcher::Error>>,
) {
    let mut running: HashMap<(String, String), Watch> = HashMap::new();
    while !tx.is_closed() {
        let wanted = wanted(readable(&store.state()));
        running.retain(|key, _| wanted.contains(key));
        for (ns, name) in wanted {
            if !running.contains_key(&(ns.clone(), name.clone())) {
                let watch = watch_one(&client, &ns, &name, tx.clone());
                running.insert((ns, name), watch);
            }
        }
        tokio::time::sleep(FOLLOW_EVERY).await;
    }
}

/// The Secret events that concern ChatClusters: the operator's own Secrets
/// (by label) merged with the Secrets the clusters in `store` name. Ends
/// its background watches when the stream is dropped.
pub fn events(
    client: Client,
    namespace: Option<String>,
    store: Store<Guarded>,
    own_selector: &str,
) -> impl Stream<Item = Result<SecretMeta, watcher::Error>> + Send + 'static {
    let api: Api<SecretMeta> = match &namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let own = watcher(api, watcher::Config::default().labels(own_selector)).touched_objects();
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(follow(client, store, tx));
    futures::stream::select(own.boxed(), rx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixtures::cluster;

    #[test]
    fn only_secrets_the_operator_does_not_create_are_watched_by_name() {
        let mut spec = crate::api::ChatClusterSpec::default();
        assert!(named_secrets(&cluster(spec.clone())).is_empty());
        spec.smtp.credentials_secret = Some("smtp".into());
        spec.auth.signing_key_secret = Some("keys".into());
        let mut a = cluster(spec);
        a.metadata.namespace = Some("team".into());
        let mut b = a.clone();
        b.metadata.name = Some("other".into());
        let wanted = wanted([&a, &b]);
        let expected: BTreeSet<(String, String)> = [("team", "keys"), ("team", "smtp")]
            .iter()
            .map(|(ns, n)| ((*ns).to_owned(), (*n).to_owned()))
            .collect();
        assert_eq!(wanted, expected);
    }
}
