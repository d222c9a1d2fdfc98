"""Full virtualization by trapping: classic trap-and-emulate with ring
compression (`trap`) and hardware-assisted trap-and-emulate as VT-x does it, with
shadow paging (`hw`) and with nested paging (`hw-npt`)."""
