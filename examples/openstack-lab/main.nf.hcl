# An OpenStack test environment inside one big guest: the guest is promoted to a hypervisor and
# holds a controller, a compute node and a network node on a management and a provider network.

variable "uri" {
  default = "qemu:///system"
}

variable "nodes" {
  description = "The OpenStack nodes inside the lab guest"
  default     = {
    controller = { vcpus = 4, memory = "8GiB", disk = "40GiB" }
    compute    = { vcpus = 4, memory = "8GiB", disk = "60GiB" }
    network    = { vcpus = 2, memory = "4GiB", disk = "20GiB" }
  }
}

variable "lab_guest" {
  description = "The one big guest that holds the nodes"
  default     = { vcpus = 12, memory = "24GiB", disk = "200GiB" }
}

kvm_host "local" {
  uri = var.uri
}

nat_network "outer" {
  host = kvm_host.local
  cidr = "10.40.0.0/24"
}

nested_guest "openstack" {
  host   = kvm_host.local
  vcpus  = var.lab_guest.vcpus
  memory = var.lab_guest.memory
  cpu    = "host-passthrough"

  disk "root" {
    size          = var.lab_guest.disk
    preallocation = "metadata"
    cache         = "unsafe"
  }

  network "uplink" {
    nat_network = nat_network.outer
  }

  lab {}
}

kvm_host "openstack" {
  guest              = nested_guest.openstack
  nested             = true
  kvm_module_options = { nested = true }
}

nat_network "mgmt" {
  host   = kvm_host.openstack
  cidr   = "10.41.0.0/24"
  domain = "mgmt.lab"

  dhcp {
    start = "10.41.0.100"
    end   = "10.41.0.200"
  }
}

nat_network "provider" {
  host = kvm_host.openstack
  cidr = "10.42.0.0/24"
}

nested_guest "node" {
  for_each = var.nodes

  host   = kvm_host.openstack
  name   = "os-${each.key}"
  vcpus  = each.value.vcpus
  memory = each.value.memory

  disk "root" {
    size  = each.value.disk
    cache = "unsafe"
  }

  network "mgmt" {
    nat_network = nat_network.mgmt
  }

  network "provider" {
    nat_network = nat_network.provider
  }

  lab {}
}

output "nodes" {
  value = { for k, n in nested_guest.node : k => n.name }
}
