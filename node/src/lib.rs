//! studio-node: the content repository server.
