//! StudioCluster API types and the names shared by the operator and the node.

/// Label and annotation names shared by every component.
pub mod labels {
    /// The StudioCluster a pod belongs to.
    pub const CLUSTER: &str = "studio.cms.io/cluster";
    /// The role a node holds: `primary`, `replica` or `arbiter`.
    pub const ROLE: &str = "studio.cms.io/role";
}
