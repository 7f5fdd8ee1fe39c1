# The smallest useful lab: one hypervisor, one NAT network, two tiny guests.

variable "uri" {
  description = "The libvirt URI of the hypervisor"
  default     = "qemu:///system"
}

kvm_host "local" {
  uri = var.uri
}

nat_network "lab" {
  host = kvm_host.local
  cidr = "192.168.150.0/24"
}

nested_guest "small" {
  count  = 2
  host   = kvm_host.local
  vcpus  = 1
  memory = "256MiB"

  disk "root" {
    size   = "1GiB"
    format = "qcow2"
  }

  network "lan" {
    nat_network = nat_network.lab
  }

  lab {}
}

output "guests" {
  description = "The libvirt domain names of the guests"
  value       = [for g in nested_guest.small : g.name]
}
