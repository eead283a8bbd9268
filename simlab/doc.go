// Package simlab runs the simulated lab: lab nodes built from the same parts
// a real lab uses, so labctl can be tested and demonstrated without hardware.
//
// A node is three processes, supervised by one `simlab relay` process:
//
//	ipmitool / labctl --UDP--> front (relay) --> ipmi_sim (OpenIPMI BMC)
//	                                                |  chassis_control hook:
//	                                                v  `simlab chassis` asks the relay
//	ipmi_sim SOL <--TCP--> console relay <--socketpair--> QEMU serial port
//
// ipmi_sim is the BMC: IPMI over lanplus with an admin user and password,
// serial-over-LAN, and a chassis_control hook for power and boot device.
//
// The relay keeps the console connected at all times: QEMU's serial port and
// ipmi_sim's SOL device both end in the relay, so nothing waits for
// ipmi_sim's 10 s reconnect timer and no early output is lost. It also owns
// the fault knobs (lossy console, silent BMC, SOL session kill), starts and
// stops QEMU when the hook asks, and records the node's state. A serial
// break a SOL client asks for (ipmi_sim sends it as telnet's IAC BRK) is
// dropped: QEMU's serial port here cannot take one.
//
// QEMU is the machine: TCG by default, a blank sparse virtio disk, a virtio
// NIC on user-mode networking whose DHCP bootfile points at the lab's TFTP
// server on the host's loopback (10.0.2.2 from the guest).
//
// Nodes get their ports from machine-wide slots (a file lock per slot), so
// concurrent test packages and users never collide and no more VMs run at
// once than LABCTL_SIMLAB_SLOTS allows. Up starts a lab and writes its lab
// config; simlabtest.StartLab does the same for a test and stops everything
// when the test ends.
package simlab
