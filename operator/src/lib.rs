//! studio-operator: reconciles StudioCluster resources.
