//! Which function version an event runs, loaded from the store and cached
//! per (function, version): its manifest parsed and its secrets opened into
//! the `FunctionSpec` workers get. A stored manifest that does not parse is
//! its own error ([`LoadError::Manifest`]), never "not deployed".

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use stoke_auth::sealed::SecretsKey;
use stoke_core::Manifest;
use stoke_proto::FunctionSpec;
use stoke_store::{Store, StoreError};

use crate::current::Deployments;

/// A function version ready to dispatch.
pub(crate) struct Loaded {
    pub spec: FunctionSpec,
    pub manifest: Manifest,
}

impl Loaded {
    /// Its function and version.
    pub fn names(&self) -> (&str, u32) {
        (&self.spec.name, self.spec.version)
    }
}

/// Why a function version could not be loaded: the event is released
/// (an unreadable manifest, a few times, then dead-lettered).
#[derive(Debug, thiserror::Error)]
pub(crate) enum LoadError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Secret(#[from] stoke_auth::sealed::SealError),
    /// The version's stored manifest does not parse (a corrupt row, or one
    /// written by a newer release than this dispatcher's).
    #[error("the stored manifest of {function:?} version {version} does not parse: {cause}")]
    Manifest {
        function: String,
        version: u32,
        cause: stoke_core::manifest::ManifestError,
    },
}

/// Loaded versions by (function, version), and the current versions as
/// last read (stale at every change through this dispatcher's admin API).
pub(crate) struct Versions {
    specs: Mutex<HashMap<(String, u32), Arc<Loaded>>>,
    pub deployments: Arc<Deployments>,
}

impl Versions {
    pub fn new(deployments: Arc<Deployments>) -> Versions {
        Versions {
            specs: Mutex::default(),
            deployments,
        }
    }

    /// The function version an event names (or the current one), cached;
    /// its secrets opened with `secrets`.
    pub async fn load(
        &self,
        store: &dyn Store,
        secrets: Option<&SecretsKey>,
        function: &str,
        version: Option<u32>,
    ) -> Result<Option<Arc<Loaded>>, LoadError> {
        let wanted = version.or_else(|| self.deployments.current.get(function));
        if let Some(v) = wanted
            && let Some(l) = self.specs.lock().expect("not poisoned").get(&(function.to_string(), v))
        {
            return Ok(Some(l.clone()));
        }
        let generation = self.deployments.current.changes().get();
        let fv = match wanted {
            Some(v) => store.get_version(function, v).await?,
            None => store.current_version(function).await?,
        };
        let Some(fv) = fv else { return Ok(None) };
        if version.is_none() {
            self.deployments.current.remember(function, fv.version, generation);
        }
        // The current version (subject events name none) is usually cached too.
        if let Some(l) = self
            .specs
            .lock()
            .expect("not poisoned")
            .get(&(fv.function.clone(), fv.version))
        {
            return Ok(Some(l.clone()));
        }
        let manifest = Manifest::parse(&fv.manifest).map_err(|cause| LoadError::Manifest {
            function: fv.function.clone(),
            version: fv.version,
            cause,
        })?;
        // Secrets are sealed in the store; the worker gets them opened.
        let mut config = fv.config.clone();
        for (name, value) in config.secrets.iter_mut() {
            *value = stoke_auth::sealed::SecretsKey::open(secrets, &fv.function, name, value)?;
        }
        let spec = FunctionSpec {
            name: fv.function.clone(),
            version: fv.version,
            digest: fv.digest.clone(),
            command: manifest.command.clone(),
            // The manifest's [env] < variables < secrets set through the API.
            env: config.merged_env(&manifest.env).into_iter().collect(),
            memory_mb: manifest.memory,
            timeout_ms: manifest.timeout_ms() as u32,
            handler: manifest.handler.clone().unwrap_or_default(),
            mode: match manifest.mode {
                stoke_core::Mode::Runtime => stoke_proto::RunMode::Runtime,
                stoke_core::Mode::Exec => stoke_proto::RunMode::Exec,
            } as i32,
            image: fv.image.clone(),
        };
        let loaded = Arc::new(Loaded { spec, manifest });
        self.specs
            .lock()
            .expect("not poisoned")
            .insert((fv.function, fv.version), loaded.clone());
        Ok(Some(loaded))
    }
}
