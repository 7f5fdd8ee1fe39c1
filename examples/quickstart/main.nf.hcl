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

# What a level of nesting costs: the same work timed on the hypervisor and inside each guest (the
# guests run under TCG where the host has no usable KVM, and the table shows it).
locals {
  every_level = concat([kvm_host.local], nested_guest.small)
}

benchmark "boot" {
  kind    = "boot"
  targets = nested_guest.small
}

benchmark "shell_loop" {
  kind       = "shell_loop"
  targets    = local.every_level
  iterations = 20000
}

benchmark "sha256" {
  kind    = "sha256"
  targets = local.every_level
  size    = "32MiB"
}
