/*
 * skiff-helper: a small resident process that starts programs and makes mount(2)/umount2(2) calls for
 * skiff (src/util/helper.ts is its client; ARCHITECTURE.md "Starting processes" says why).
 *
 * Node.js starts a child with fork(2): the kernel copies the page tables of the whole daemon (tens of MiB)
 * and Node's only thread waits until the child has exec'd, 7-16 ms per process on a small VM. This helper
 * is a few hundred KiB; it starts children with vfork(2) (the child borrows the helper's memory until it
 * execs: no page-table copy) and relays their pipes, and it mounts by system call instead of mount(8).
 *
 * Protocol, both directions on the helper's stdin/stdout: frames of
 *   u32 length (little endian, of what follows) | u8 type | u32 id | payload
 * Requests:
 *   SPAWN  flags:u32 (1 = new session) | nfds:u8 | nfds × kind:u8 (0 /dev/null, 1 pipe the child reads,
 *          2 pipe the child writes) | cwd\0 | file\0 | argc:u32 | argv\0… | envc:u32 | env\0…
 *   WRITE  fd:u8 | bytes            (queued for the child's fd `fd`, a kind-1 pipe)
 *   CLOSE  fd:u8                    (close that pipe once its queue is written)
 *   RELEASE                         (stop relaying: close every pipe of this child)
 *   MOUNT  flags:u64 | source\0 | target\0 | fstype\0 | data\0 | cwd\0
 *   UMOUNT flags:u32 | target\0
 * Replies:
 *   STARTED pid:i32 | errno:i32     (pid 0 and an errno when the spawn failed)
 *   DATA    fd:u8 | bytes           (from a kind-2 pipe)
 *   EOF     fd:u8
 *   EXIT    status:i32              (waitpid's status word)
 *   RESULT  errno:i32               (of a MOUNT or UMOUNT; 0 = done)
 *
 * The helper exits when its stdin reaches EOF (skiff went away) and is killed with skiff (PDEATHSIG).
 * Children it started keep running; they are reparented like any orphan.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

enum { REQ_SPAWN = 1, REQ_WRITE = 2, REQ_CLOSE = 3, REQ_RELEASE = 4, REQ_MOUNT = 5, REQ_UMOUNT = 6 };
enum { REP_STARTED = 1, REP_DATA = 2, REP_EOF = 3, REP_EXIT = 4, REP_RESULT = 5 };
enum { KIND_NULL = 0, KIND_IN = 1, KIND_OUT = 2 };

#define MAX_FDS 8
#define MAX_FRAME (64u << 20)

struct pipe_end {
  int fd;          /* our end, -1 when closed */
  int kind;        /* KIND_IN or KIND_OUT */
  char *queue;     /* KIND_IN: bytes not yet written */
  size_t queued;
  int close_after; /* KIND_IN: close once the queue is empty */
};

struct child {
  struct child *next;
  uint32_t id;
  pid_t pid;
  int exited;
  struct pipe_end ends[MAX_FDS];
};

static struct child *children;
static char *inbuf;
static size_t inlen, incap;

static void die(const char *what) {
  fprintf(stderr, "skiff-helper: %s: %s\n", what, strerror(errno));
  exit(1);
}

static void put32(unsigned char *p, uint32_t v) {
  p[0] = v & 0xff;
  p[1] = (v >> 8) & 0xff;
  p[2] = (v >> 16) & 0xff;
  p[3] = (v >> 24) & 0xff;
}

static uint32_t get32(const unsigned char *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void write_all(int fd, const void *buf, size_t len) {
  const char *p = buf;
  while (len > 0) {
    ssize_t n = write(fd, p, len);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) {
        struct pollfd w = {.fd = fd, .events = POLLOUT};
        poll(&w, 1, -1);
        continue;
      }
      exit(0); /* skiff is gone */
    }
    p += n;
    len -= (size_t)n;
  }
}

/* One reply frame: header, optional fd byte, then body. */
static void reply(int type, uint32_t id, int fd, const void *body, size_t len) {
  unsigned char head[10];
  size_t h = 9;
  put32(head, (uint32_t)(5 + (fd >= 0 ? 1 : 0) + len));
  head[4] = (unsigned char)type;
  put32(head + 5, id);
  if (fd >= 0) head[h++] = (unsigned char)fd;
  write_all(1, head, h);
  if (len > 0) write_all(1, body, len);
}

static void reply_i32(int type, uint32_t id, int32_t a) {
  unsigned char b[4];
  put32(b, (uint32_t)a);
  reply(type, id, -1, b, 4);
}

static struct child *find_child(uint32_t id) {
  for (struct child *c = children; c; c = c->next)
    if (c->id == id) return c;
  return NULL;
}

static void close_end(struct pipe_end *e) {
  if (e->fd >= 0) close(e->fd);
  e->fd = -1;
  free(e->queue);
  e->queue = NULL;
  e->queued = 0;
}

static int child_done(const struct child *c) {
  if (!c->exited) return 0;
  for (int i = 0; i < MAX_FDS; i++)
    if (c->ends[i].fd >= 0) return 0;
  return 1;
}

static void reap_done(void) {
  struct child **pp = &children;
  while (*pp) {
    struct child *c = *pp;
    if (child_done(c)) {
      *pp = c->next;
      free(c);
    } else {
      pp = &c->next;
    }
  }
}

/* A cursor over a request payload; `ok` drops to 0 on a short or malformed payload. */
struct cursor {
  const unsigned char *p, *end;
  int ok;
};

static uint32_t cur_u32(struct cursor *c) {
  if (c->end - c->p < 4) {
    c->ok = 0;
    return 0;
  }
  uint32_t v = get32(c->p);
  c->p += 4;
  return v;
}

static uint8_t cur_u8(struct cursor *c) {
  if (c->end - c->p < 1) {
    c->ok = 0;
    return 0;
  }
  return *c->p++;
}

static const char *cur_str(struct cursor *c) {
  const unsigned char *nul = memchr(c->p, 0, (size_t)(c->end - c->p));
  if (!nul) {
    c->ok = 0;
    return "";
  }
  const char *s = (const char *)c->p;
  c->p = nul + 1;
  return s;
}

/* `file` as execvp would find it, but on the child's PATH (from its env) rather than ours. */
static int resolve(const char *file, char *const envp[], char *out, size_t outlen) {
  if (strchr(file, '/')) {
    snprintf(out, outlen, "%s", file);
    return 0;
  }
  const char *path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
  for (char *const *e = envp; *e; e++)
    if (strncmp(*e, "PATH=", 5) == 0) path = *e + 5;
  int err = ENOENT;
  while (*path) {
    const char *colon = strchrnul(path, ':');
    int n = (int)(colon - path);
    snprintf(out, outlen, "%.*s/%s", n, n ? path : ".", file);
    if (access(out, X_OK) == 0) {
      struct stat st;
      if (stat(out, &st) == 0 && S_ISREG(st.st_mode)) return 0;
    } else if (errno == EACCES) {
      err = EACCES;
    }
    path = *colon ? colon + 1 : colon;
  }
  return err;
}

/* What the child sets before exec fails, read by the parent once vfork returns (the memory is shared). */
static volatile int child_errno;

/* rt_sigaction's kernel struct: glibc's sigaction() refuses its own two internal signals (32, 33). */
struct kernel_sigaction {
  void (*handler)(int);
  unsigned long flags;
  void (*restorer)(void);
  uint64_t mask;
};

/*
 * Starts `path` with vfork (the child borrows our memory until it execs: no page-table copy), as
 * posix_spawn does, but with every signal reset to its default: glibc's posix_spawn leaves its internal
 * signals 32 and 33 ignored in the child, and ignored signals survive exec. Returns the pid, or 0 with
 * *err set. The child only makes system calls before execve.
 */
static pid_t start_child(const char *path, char *const argv[], char *const envp[], const char *cwd,
                         int new_session, int nfds, const int kinds[], const int theirs[], int *err) {
  child_errno = 0;
  pid_t pid = vfork();
  if (pid < 0) {
    *err = errno;
    return 0;
  }
  if (pid == 0) {
    struct kernel_sigaction dfl = {.handler = SIG_DFL};
    for (int sig = 1; sig <= 64; sig++)
      if (sig != SIGKILL && sig != SIGSTOP) syscall(SYS_rt_sigaction, sig, &dfl, NULL, 8);
    uint64_t none = 0;
    syscall(SYS_rt_sigprocmask, SIG_SETMASK, &none, NULL, 8);
    for (int i = 0; i < nfds; i++) {
      int fd = theirs[i];
      if (kinds[i] == KIND_NULL) {
        fd = open("/dev/null", O_RDWR);
        if (fd < 0) goto fail;
      }
      if (fd != i && dup2(fd, i) < 0) goto fail;
      if (fd == i) fcntl(fd, F_SETFD, 0);
      if (kinds[i] == KIND_NULL && fd != i) close(fd);
    }
    if (*cwd && chdir(cwd) < 0) goto fail;
    if (new_session && setsid() < 0) goto fail;
    execve(path, argv, envp);
    if (errno == ENOEXEC) {
      /* As execvp: `sh path argv[1]…`, in the spare slot before argv (do_spawn) and argv[0]'s. */
      char **sh = (char **)argv - 1;
      sh[0] = "sh";
      sh[1] = (char *)path;
      execve("/bin/sh", sh, envp);
    }
  fail:
    child_errno = errno ? errno : EINVAL;
    _exit(127);
  }
  if (child_errno != 0) {
    *err = child_errno;
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return 0;
  }
  return pid;
}

static void do_spawn(uint32_t id, struct cursor *c) {
  uint32_t flags = cur_u32(c);
  int nfds = cur_u8(c);
  int kinds[MAX_FDS];
  if (nfds < 3 || nfds > MAX_FDS) c->ok = 0;
  for (int i = 0; i < nfds && c->ok; i++) kinds[i] = cur_u8(c);
  const char *cwd = cur_str(c);
  const char *file = cur_str(c);
  uint32_t argc = cur_u32(c);
  if (argc > 1u << 20) c->ok = 0;
  /* A spare slot in front: a file without #! runs as `sh file args…`, as execvp does (start_child). */
  char **slots = c->ok ? calloc(argc + 2, sizeof(char *)) : NULL;
  char **argv = slots ? slots + 1 : NULL;
  for (uint32_t i = 0; argv && i < argc; i++) argv[i] = (char *)cur_str(c);
  uint32_t envc = cur_u32(c);
  if (envc > 1u << 20) c->ok = 0;
  char **envp = c->ok ? calloc(envc + 1, sizeof(char *)) : NULL;
  for (uint32_t i = 0; envp && i < envc; i++) envp[i] = (char *)cur_str(c);
  if (!c->ok || !argv || !envp || argc == 0) {
    free(slots);
    free(envp);
    unsigned char b[8];
    put32(b, 0);
    put32(b + 4, EINVAL);
    reply(REP_STARTED, id, -1, b, 8);
    return;
  }

  struct child *ch = calloc(1, sizeof *ch);
  ch->id = id;
  for (int i = 0; i < MAX_FDS; i++) ch->ends[i].fd = -1;
  int theirs[MAX_FDS];
  for (int i = 0; i < MAX_FDS; i++) theirs[i] = -1;
  int err = 0;
  char path[4096];
  err = resolve(file, envp, path, sizeof path);

  for (int i = 0; i < nfds && !err; i++) {
    if (kinds[i] == KIND_NULL) continue;
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0) {
      err = errno;
      break;
    }
    int ours = kinds[i] == KIND_IN ? p[1] : p[0];
    int their = kinds[i] == KIND_IN ? p[0] : p[1];
    /* Keep the child's ends above the fds it is given, so no dup2 overwrites a later source. */
    if (their < MAX_FDS) {
      int moved = fcntl(their, F_DUPFD_CLOEXEC, MAX_FDS);
      close(their);
      their = moved;
    }
    fcntl(ours, F_SETFL, O_NONBLOCK);
    ch->ends[i].fd = ours;
    ch->ends[i].kind = kinds[i];
    theirs[i] = their;
    if (their < 0) err = errno;
  }

  pid_t pid = 0;
  if (!err) {
    pid = start_child(path, argv, envp, cwd, flags & 1, nfds, kinds, theirs, &err);
  }
  for (int i = 0; i < MAX_FDS; i++)
    if (theirs[i] >= 0) close(theirs[i]);
  free(slots);
  free(envp);

  unsigned char b[8];
  put32(b, err ? 0 : (uint32_t)pid);
  put32(b + 4, (uint32_t)err);
  reply(REP_STARTED, id, -1, b, 8);
  if (err) {
    for (int i = 0; i < MAX_FDS; i++) close_end(&ch->ends[i]);
    free(ch);
    return;
  }
  ch->pid = pid;
  ch->next = children;
  children = ch;
}

static void flush_in(struct child *ch, int i) {
  struct pipe_end *e = &ch->ends[i];
  while (e->fd >= 0 && e->queued > 0) {
    ssize_t n = write(e->fd, e->queue, e->queued);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) return;
      close_end(e); /* EPIPE: the child closed its end; drop the rest */
      return;
    }
    memmove(e->queue, e->queue + n, e->queued - (size_t)n);
    e->queued -= (size_t)n;
  }
  if (e->fd >= 0 && e->queued == 0 && e->close_after) close_end(e);
}

static void do_write(uint32_t id, struct cursor *c, int close_it) {
  struct child *ch = find_child(id);
  int fd = cur_u8(c);
  if (!ch || !c->ok || fd >= MAX_FDS || ch->ends[fd].kind != KIND_IN || ch->ends[fd].fd < 0) return;
  struct pipe_end *e = &ch->ends[fd];
  size_t n = (size_t)(c->end - c->p);
  if (close_it) {
    e->close_after = 1;
  } else if (n > 0) {
    char *q = realloc(e->queue, e->queued + n);
    if (!q) die("realloc");
    memcpy(q + e->queued, c->p, n);
    e->queue = q;
    e->queued += n;
  }
  flush_in(ch, fd);
}

static void do_release(uint32_t id) {
  struct child *ch = find_child(id);
  if (!ch) return;
  for (int i = 0; i < MAX_FDS; i++) close_end(&ch->ends[i]);
}

static void do_mount(uint32_t id, struct cursor *c) {
  uint32_t lo = cur_u32(c), hi = cur_u32(c);
  unsigned long flags = (unsigned long)(((uint64_t)hi << 32) | lo);
  const char *source = cur_str(c);
  const char *target = cur_str(c);
  const char *fstype = cur_str(c);
  const char *data = cur_str(c);
  const char *cwd = cur_str(c);
  int err = 0;
  if (!c->ok) {
    err = EINVAL;
  } else if (*cwd && chdir(cwd) < 0) {
    err = errno;
  } else {
    if (mount(*source ? source : NULL, target, *fstype ? fstype : NULL, flags, *data ? data : NULL) < 0)
      err = errno;
    if (*cwd && chdir("/") < 0) die("chdir /");
  }
  reply_i32(REP_RESULT, id, err);
}

static void do_umount(uint32_t id, struct cursor *c) {
  uint32_t flags = cur_u32(c);
  const char *target = cur_str(c);
  int err = 0;
  if (!c->ok)
    err = EINVAL;
  else if (umount2(target, (int)flags) < 0)
    err = errno;
  reply_i32(REP_RESULT, id, err);
}

static void handle_frame(const unsigned char *p, uint32_t len) {
  if (len < 5) return;
  int type = p[0];
  uint32_t id = get32(p + 1);
  struct cursor c = {p + 5, p + len, 1};
  switch (type) {
    case REQ_SPAWN: do_spawn(id, &c); break;
    case REQ_WRITE: do_write(id, &c, 0); break;
    case REQ_CLOSE: do_write(id, &c, 1); break;
    case REQ_RELEASE: do_release(id); break;
    case REQ_MOUNT: do_mount(id, &c); break;
    case REQ_UMOUNT: do_umount(id, &c); break;
    default: break;
  }
}

/* Reads what stdin has and handles every whole frame; returns 0 at EOF. */
static int read_requests(void) {
  if (incap - inlen < 65536) {
    incap = incap ? incap * 2 : 131072;
    inbuf = realloc(inbuf, incap);
    if (!inbuf) die("realloc");
  }
  ssize_t n = read(0, inbuf + inlen, incap - inlen);
  if (n == 0) return 0;
  if (n < 0) return errno == EINTR || errno == EAGAIN;
  inlen += (size_t)n;
  size_t off = 0;
  while (inlen - off >= 4) {
    uint32_t len = get32((unsigned char *)inbuf + off);
    if (len > MAX_FRAME) {
      fprintf(stderr, "skiff-helper: frame of %u bytes, giving up\n", len);
      exit(2);
    }
    if (inlen - off - 4 < len) {
      if (len + 4 > incap) {
        incap = len + 4 + 65536;
        inbuf = realloc(inbuf, incap);
        if (!inbuf) die("realloc");
      }
      break;
    }
    handle_frame((unsigned char *)inbuf + off + 4, len);
    off += 4 + len;
  }
  memmove(inbuf, inbuf + off, inlen - off);
  inlen -= off;
  return 1;
}

static void reap(void) {
  for (;;) {
    int status;
    pid_t pid = waitpid(-1, &status, WNOHANG);
    if (pid <= 0) return;
    for (struct child *c = children; c; c = c->next) {
      if (c->pid == pid && !c->exited) {
        c->exited = 1;
        reply_i32(REP_EXIT, c->id, status);
        break;
      }
    }
  }
}

int main(int argc, char **argv) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  /* argv[1]: skiff's pid. If skiff died before the line above, we were reparented already. */
  if (argc > 1 && getppid() != (pid_t)atol(argv[1])) return 0;
  signal(SIGPIPE, SIG_IGN);
  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  if (sigprocmask(SIG_BLOCK, &chld, NULL) < 0) die("sigprocmask");
  int sfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
  if (sfd < 0) die("signalfd");
  if (chdir("/") < 0) die("chdir /");
  fcntl(0, F_SETFD, FD_CLOEXEC);
  fcntl(1, F_SETFD, FD_CLOEXEC);

  struct pollfd *pfds = NULL;
  struct {
    struct child *c;
    int i;
  } *owners = NULL;
  size_t cap = 0;
  char buf[65536];
  for (;;) {
    size_t n = 2;
    for (struct child *c = children; c; c = c->next)
      for (int i = 0; i < MAX_FDS; i++)
        if (c->ends[i].fd >= 0) n++;
    if (n > cap) {
      cap = n * 2;
      pfds = realloc(pfds, cap * sizeof *pfds);
      owners = realloc(owners, cap * sizeof *owners);
      if (!pfds || !owners) die("realloc");
    }
    pfds[0] = (struct pollfd){.fd = 0, .events = POLLIN};
    pfds[1] = (struct pollfd){.fd = sfd, .events = POLLIN};
    n = 2;
    for (struct child *c = children; c; c = c->next) {
      for (int i = 0; i < MAX_FDS; i++) {
        struct pipe_end *e = &c->ends[i];
        if (e->fd < 0) continue;
        short ev = e->kind == KIND_OUT ? POLLIN : (e->queued > 0 ? POLLOUT : 0);
        pfds[n] = (struct pollfd){.fd = e->fd, .events = ev};
        owners[n].c = c;
        owners[n].i = i;
        n++;
      }
    }
    if (poll(pfds, n, -1) < 0) {
      if (errno == EINTR) continue;
      die("poll");
    }
    /* Child pipes first: a child's last output is relayed before its EXIT when both are ready. */
    for (size_t k = 2; k < n; k++) {
      if (!pfds[k].revents) continue;
      struct child *c = owners[k].c;
      int i = owners[k].i;
      struct pipe_end *e = &c->ends[i];
      if (e->fd != pfds[k].fd) continue;
      if (e->kind == KIND_OUT) {
        ssize_t r = read(e->fd, buf, sizeof buf);
        if (r > 0) {
          reply(REP_DATA, c->id, i, buf, (size_t)r);
        } else if (r == 0 || (errno != EINTR && errno != EAGAIN)) {
          close_end(e);
          reply(REP_EOF, c->id, i, NULL, 0);
        }
      } else if (pfds[k].revents & (POLLERR | POLLHUP)) {
        close_end(e);
      } else {
        flush_in(c, i);
      }
    }
    if (pfds[1].revents) {
      struct signalfd_siginfo si;
      while (read(sfd, &si, sizeof si) > 0) {
      }
      reap();
    }
    if (pfds[0].revents && !read_requests()) return 0;
    reap_done();
  }
}
