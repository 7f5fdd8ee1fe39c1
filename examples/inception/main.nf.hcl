# "Inception": the nested-KVM article's setup as configuration. guest0 is the physical hypervisor;
# guest1 runs on it, guest2 inside guest1, guest3 inside guest2. Every guest is promoted to a
# hypervisor with nesting enabled, has a NAT network of its own, and the article's benchmarks run
# on every level.

variable "uri" {
  description = "The level-0 hypervisor (the article's guest0)"
  default     = "qemu:///system"
}

variable "base_cidr" {
  description = "Each level's NAT network is one /24 of this range"
  default     = "192.168.0.0/16"
}

variable "disk_gib" {
  type        = number
  description = "Size of each guest's disk in GiB; the article used 36"
  default     = 36
}

variable "memory" {
  type        = map(string)
  description = "Memory of each guest; each level must fit inside the one below it"
  default     = {
    guest1 = "12GiB"
    guest2 = "8GiB"
    guest3 = "4GiB"
  }
}

variable "vcpus" {
  type        = number
  description = "vCPUs of each guest; the article gave every level 2"
  default     = 2
}

variable "kvm_options" {
  type        = map(string)
  description = <<-EOT
    Options of the KVM vendor module on every level. The article's Intel host also had
    enable_shadow_vmcs = 1, enable_apicv = 1 and ept = 1 (kvm_intel only); nested = 1 works on both
    kvm_intel and kvm_amd.
  EOT
  default     = {
    nested = 1
  }
}

variable "sha256_size" {
  type        = string
  description = "The file hashed at every level; the article hashed 2GB. It lives in each level's page cache, so it must fit in guest3's memory"
  default     = "2GiB"
}

variable "shell_loop_iterations" {
  type        = number
  description = "Iterations of the shell loop at every level"
  default     = 100000
}

locals {
  kvm_options = var.kvm_options
  disk_size   = "${var.disk_gib}G"
}

kvm_host "guest0" {
  uri                = var.uri
  nested             = true
  kvm_module_options = local.kvm_options
}

nat_network "level0" {
  host = kvm_host.guest0
  cidr = cidrsubnet(var.base_cidr, 8, 100) # not 122: libvirt's own `default` network has 192.168.122.0/24
}

nested_guest "guest1" {
  host   = kvm_host.guest0
  vcpus  = var.vcpus
  memory = var.memory.guest1

  disk "root" {
    size          = local.disk_size
    format        = "qcow2"
    preallocation = "metadata"
    cache         = "unsafe"
    bus           = "virtio"
  }

  network "eth0" {
    nat_network = nat_network.level0
  }

  lab {}
}

kvm_host "guest1" {
  guest              = nested_guest.guest1
  nested             = true
  kvm_module_options = local.kvm_options
}

nat_network "level1" {
  host = kvm_host.guest1
  cidr = cidrsubnet(var.base_cidr, 8, 1)
}

nested_guest "guest2" {
  host   = kvm_host.guest1
  vcpus  = var.vcpus
  memory = var.memory.guest2

  disk "root" {
    size          = local.disk_size
    format        = "qcow2"
    preallocation = "metadata"
    cache         = "unsafe"
    bus           = "virtio"
  }

  network "eth0" {
    nat_network = nat_network.level1
  }

  lab {}
}

kvm_host "guest2" {
  guest              = nested_guest.guest2
  nested             = true
  kvm_module_options = local.kvm_options
}

nat_network "level2" {
  host = kvm_host.guest2
  cidr = cidrsubnet(var.base_cidr, 8, 2)
}

nested_guest "guest3" {
  host   = kvm_host.guest2
  vcpus  = var.vcpus
  memory = var.memory.guest3

  disk "root" {
    size          = local.disk_size
    format        = "qcow2"
    preallocation = "metadata"
    cache         = "unsafe"
    bus           = "virtio"
  }

  network "eth0" {
    nat_network = nat_network.level2
  }

  lab {}
}

locals {
  every_level = [kvm_host.guest0, nested_guest.guest1, nested_guest.guest2, nested_guest.guest3]
}

benchmark "boot" {
  kind    = "boot"
  targets = [nested_guest.guest1, nested_guest.guest2, nested_guest.guest3]
}

# Cold cache first, then the same data read again with warm caches, three times.
benchmark "block_read" {
  kind    = "block_read"
  targets = local.every_level
  sizes   = ["1GiB"]
  repeat  = 3
}

# sha256 of a 2GB file, served from the page cache.
benchmark "sha256" {
  kind    = "sha256"
  targets = local.every_level
  size    = var.sha256_size
  repeat  = 3
}

# The "big bash shell loop".
benchmark "shell_loop" {
  kind       = "shell_loop"
  targets    = local.every_level
  iterations = var.shell_loop_iterations
}

benchmark "network" {
  kind    = "network"
  targets = [nested_guest.guest1, nested_guest.guest2, nested_guest.guest3]
  size    = "512MiB"
}

output "results" {
  description = "Every benchmark's results, by benchmark"
  value       = {
    boot       = benchmark.boot.results
    block_read = benchmark.block_read.results
    sha256     = benchmark.sha256.results
    shell_loop = benchmark.shell_loop.results
    network    = benchmark.network.results
  }
}

output "networks" {
  value = { for n in [nat_network.level0, nat_network.level1, nat_network.level2] : n.name => n.cidr }
}
