//! The cluster secret: from `cluster_secret_file`, or generated once in the data directory for
//! a lone edge (`damselfly_server::secret_file`).

use damselfly_core::ClusterSecret;

use crate::config::Config;
use crate::error::{EdgeError, EdgeResult};

pub fn load_or_create(config: &Config) -> EdgeResult<ClusterSecret> {
    let bytes = damselfly_server::secret_file::load_or_create(
        config.cluster_secret_file.as_deref(),
        &config.data_dir,
    )
    .map_err(EdgeError::Internal)?;
    ClusterSecret::new(&bytes).map_err(|e| EdgeError::Internal(format!("cluster secret: {e}")))
}
