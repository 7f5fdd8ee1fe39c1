//! The libvirt provider: domains, networks, a storage pool and volumes on any libvirt URI
