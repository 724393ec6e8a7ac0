/**
 * The runtime's defaults for a Kubernetes container, as containerd's CRI plugin builds them (Apache-2.0):
 * `pkg/oci/spec.go` (populateDefaultUnixSpec, defaultUnixCaps), `pkg/oci/mounts.go` (defaultMounts),
 * `internal/cri/opts/spec_linux_opts.go` (the cgroup mount added by withMounts) and
 * `pkg/oci/spec_opts.go` (WithDefaultUnixDevices, defaultUnixEnv). Transcribed as our own data.
 *
 * Resource limits: containerd's default spec has RLIMIT_NOFILE 1024/1024, but its CRI plugin removes every
 * default rlimit (WithoutDefaultSecuritySettings, containerd/cri#515), so a pod's processes inherit the
 * runtime's limits (the daemon's systemd unit). skiff does the same: no `process.rlimits` in a container.
 */
import type { LinuxDeviceCgroup, Mount } from './types.js';

/** The 14 capabilities a non-privileged container gets (containerd `defaultUnixCaps`, Docker's set). */
export const DEFAULT_CAPABILITIES: readonly string[] = [
  'CAP_CHOWN',
  'CAP_DAC_OVERRIDE',
  'CAP_FSETID',
  'CAP_FOWNER',
  'CAP_MKNOD',
  'CAP_NET_RAW',
  'CAP_SETGID',
  'CAP_SETUID',
  'CAP_SETFCAP',
  'CAP_SETPCAP',
  'CAP_NET_BIND_SERVICE',
  'CAP_SYS_CHROOT',
  'CAP_KILL',
  'CAP_AUDIT_WRITE',
];

/**
 * Every capability Linux defines, in number order (capability.h, 0 … 40 as of Linux 5.9+). Used for
 * privileged containers and `add: ["ALL"]` (containerd takes the daemon's own effective set, which for a
 * root daemon is this list), and to reject misspelt names early instead of runc warning and skipping.
 */
export const ALL_CAPABILITIES: readonly string[] = [
  'CAP_CHOWN',
  'CAP_DAC_OVERRIDE',
  'CAP_DAC_READ_SEARCH',
  'CAP_FOWNER',
  'CAP_FSETID',
  'CAP_KILL',
  'CAP_SETGID',
  'CAP_SETUID',
  'CAP_SETPCAP',
  'CAP_LINUX_IMMUTABLE',
  'CAP_NET_BIND_SERVICE',
  'CAP_NET_BROADCAST',
  'CAP_NET_ADMIN',
  'CAP_NET_RAW',
  'CAP_IPC_LOCK',
  'CAP_IPC_OWNER',
  'CAP_SYS_MODULE',
  'CAP_SYS_RAWIO',
  'CAP_SYS_CHROOT',
  'CAP_SYS_PTRACE',
  'CAP_SYS_PACCT',
  'CAP_SYS_ADMIN',
  'CAP_SYS_BOOT',
  'CAP_SYS_NICE',
  'CAP_SYS_RESOURCE',
  'CAP_SYS_TIME',
  'CAP_SYS_TTY_CONFIG',
  'CAP_MKNOD',
  'CAP_LEASE',
  'CAP_AUDIT_WRITE',
  'CAP_AUDIT_CONTROL',
  'CAP_SETFCAP',
  'CAP_MAC_OVERRIDE',
  'CAP_MAC_ADMIN',
  'CAP_SYSLOG',
  'CAP_WAKE_ALARM',
  'CAP_BLOCK_SUSPEND',
  'CAP_AUDIT_READ',
  'CAP_PERFMON',
  'CAP_BPF',
  'CAP_CHECKPOINT_RESTORE',
];

/** PATH when neither the image nor the request sets one (containerd `defaultUnixEnv`). */
export const DEFAULT_PATH_ENV = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/**
 * The mounts every container gets before the sandbox's files and the CRI mounts (containerd
 * `defaultMounts` without /run, which its CRI plugin drops with WithoutRunMount, plus the read-only
 * cgroup mount that `withMounts` adds). A fresh copy each call: the builder edits options in place
 * (privileged containers get rw sysfs and cgroupfs).
 */
export function defaultMounts(): Mount[] {
  return [
    { destination: '/proc', type: 'proc', source: 'proc', options: ['nosuid', 'noexec', 'nodev'] },
    {
      destination: '/dev',
      type: 'tmpfs',
      source: 'tmpfs',
      options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'],
    },
    {
      destination: '/dev/pts',
      type: 'devpts',
      source: 'devpts',
      options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620', 'gid=5'],
    },
    {
      destination: '/dev/shm',
      type: 'tmpfs',
      source: 'shm',
      options: ['nosuid', 'noexec', 'nodev', 'mode=1777', 'size=65536k'],
    },
    { destination: '/dev/mqueue', type: 'mqueue', source: 'mqueue', options: ['nosuid', 'noexec', 'nodev'] },
    { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', 'ro'] },
    {
      destination: '/sys/fs/cgroup',
      type: 'cgroup',
      source: 'cgroup',
      options: ['nosuid', 'noexec', 'nodev', 'relatime', 'ro'],
    },
  ];
}

/** Paths masked (bind-mounted over with /dev/null or an empty tmpfs) in a non-privileged container. */
export const DEFAULT_MASKED_PATHS: readonly string[] = [
  '/proc/acpi',
  '/proc/asound',
  '/proc/kcore',
  '/proc/keys',
  '/proc/latency_stats',
  '/proc/timer_list',
  '/proc/timer_stats',
  '/proc/sched_debug',
  '/sys/firmware',
  '/sys/devices/virtual/powercap',
  '/proc/scsi',
];

/** Paths remounted read-only in a non-privileged container. */
export const DEFAULT_READONLY_PATHS: readonly string[] = [
  '/proc/bus',
  '/proc/fs',
  '/proc/irq',
  '/proc/sys',
  '/proc/sysrq-trigger',
];

/**
 * The device cgroup: deny everything, then allow the standard character devices (containerd's default
 * spec denies all; `WithDefaultUnixDevices` lists these, the same set runc always allows). Written out so
 * config.json says what the container may open instead of relying on the runtime's implicit list.
 */
export function defaultDeviceRules(): LinuxDeviceCgroup[] {
  const char = (major: number, minor?: number): LinuxDeviceCgroup =>
    minor === undefined
      ? { allow: true, type: 'c', major, access: 'rwm' }
      : { allow: true, type: 'c', major, minor, access: 'rwm' };
  return [
    { allow: false, access: 'rwm' },
    char(1, 3), // /dev/null
    char(1, 8), // /dev/random
    char(1, 7), // /dev/full
    char(5, 0), // /dev/tty
    char(1, 5), // /dev/zero
    char(1, 9), // /dev/urandom
    char(5, 1), // /dev/console
    char(136), // /dev/pts/*
    char(5, 2), // /dev/ptmx
  ];
}
