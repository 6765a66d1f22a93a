#!/usr/bin/env bash
# Bring up everything virtbus needs on a Debian/Ubuntu machine, skipping what
# is already there: system packages, dockerd, RabbitMQ, the tiny busybox test
# images, the project virtualenv and the AsyncAPI parser the tests validate
# the bus's AsyncAPI document with.  Safe to run repeatedly.
#
# Progress goes to stderr; the final summary goes to stdout.
#
# NOTE: traffic to private address ranges is forbidden on the machines this
# runs on, so dockerd is started with --bridge=none and no bridge network is
# ever created.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

DOCKERD_LOG=/var/log/virtbus-dockerd.log
DOCKER_WAIT=60
RABBIT_WAIT=90
MANAGEMENT_WAIT=60
TEST_IMAGE_REPO="${VIRTBUS_TEST_IMAGE_REPO:-virtbus-test}"
# Bump when the content of the test image changes; images carrying another
# (or no) version label are rebuilt.
TEST_IMAGE_VERSION=1
TEST_IMAGE_LABEL=org.virtbus.test-image.version
VENV="$REPO_ROOT/.venv"
STAMP="$VENV/.installed"
ASYNCAPI_TOOLS="$REPO_ROOT/tools/asyncapi"
ASYNCAPI_STAMP="$ASYNCAPI_TOOLS/node_modules/.installed"
NPM_WAIT=300
NODE_MIN_MAJOR=18

log() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: ERROR: %s\n' "$*" >&2; exit 1; }

show_tail() { # file [lines]
    local f="$1" n="${2:-40}"
    if [[ -r "$f" ]]; then
        printf -- '--- last %s lines of %s ---\n' "$n" "$f" >&2
        tail -n "$n" "$f" >&2 || true
        printf -- '--- end of %s ---\n' "$f" >&2
    fi
}

need_root() {
    [[ "$(id -u)" -eq 0 ]] || die "$1 needs root (re-run as root)"
}

# ---------------------------------------------------------------- packages --
busybox_is_static() {
    [[ -x /bin/busybox ]] || return 1
    if command -v file >/dev/null 2>&1; then
        file -L /bin/busybox | grep -q 'statically linked' && return 0
    fi
    # ldd prints "not a dynamic executable" (and exits 1) for static binaries.
    LC_ALL=C ldd /bin/busybox 2>&1 | grep -q 'not a dynamic executable'
}

python_ok() { # python -> 0 if >= 3.11 and can create venvs with pip
    "$1" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' \
        >/dev/null 2>&1
}

find_python() {
    local p
    for p in python3.11 python3; do
        if command -v "$p" >/dev/null 2>&1 && python_ok "$p"; then
            command -v "$p"
            return 0
        fi
    done
    return 1
}

# The gateway's tests drive the real virsh, libvirt-python and Ansible's libvirt modules
# (community.libvirt, in Debian's ansible; its virt_net needs lxml), all in the system
# python3. Without recommends: they would bring libvirtd, QEMU and some 200 packages.
install_libvirt_clients() {
    local missing=()
    command -v virsh >/dev/null 2>&1 || missing+=(libvirt-clients)
    /usr/bin/python3 -c 'import libvirt' >/dev/null 2>&1 || missing+=(python3-libvirt)
    # ansible-core alone has ansible-playbook but not the collection
    /usr/bin/python3 -c 'import ansible_collections.community.libvirt' >/dev/null 2>&1 ||
        missing+=(ansible)
    /usr/bin/python3 -c 'import lxml' >/dev/null 2>&1 || missing+=(python3-lxml)
    # the SCRAM plugin of Cyrus SASL: libvirt's client logs in to a --sasl-users gateway
    compgen -G '/usr/lib/*/sasl2/libscram.so*' >/dev/null || missing+=(libsasl2-modules)
    if [[ ${#missing[@]} -eq 0 ]]; then
        log "libvirt clients: present"
        return 0
    fi
    need_root "installing ${missing[*]}"
    log "installing: ${missing[*]}"
    local aptlog
    aptlog="$(mktemp /tmp/virtbus-apt.XXXXXX)"
    if ! {
        DEBIAN_FRONTEND=noninteractive apt-get update -q &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
                "${missing[@]}"
    } >"$aptlog" 2>&1; then
        show_tail "$aptlog" 60
        die "apt-get failed installing ${missing[*]}; full log: $aptlog"
    fi
    rm -f "$aptlog"
    command -v virsh >/dev/null 2>&1 || die "virsh still missing after install"
    /usr/bin/python3 -c 'import libvirt' || die "python3-libvirt does not import after install"
    /usr/bin/python3 -c 'import ansible_collections.community.libvirt' ||
        die "Ansible's community.libvirt collection still missing after install"
    /usr/bin/python3 -c 'import lxml' || die "python3-lxml does not import after install"
    compgen -G '/usr/lib/*/sasl2/libscram.so*' >/dev/null || die "SASL's SCRAM plugin still missing"
}

# The virt-manager test (tests/integration/test_virt_manager.py) drives Debian's
# virt-manager under Xvfb through the AT-SPI tree (dogtail, in the system python3) and
# xdotool, and grabs a screenshot with ImageMagick; test_virtinst.py runs its command-line
# tools (virtinst: virt-install, virt-xml, virt-clone). Without recommends: libvirtd and QEMU.
install_virt_manager_tools() {
    local missing=()
    command -v virt-manager >/dev/null 2>&1 || missing+=(virt-manager)
    command -v virt-install >/dev/null 2>&1 || missing+=(virtinst)
    command -v Xvfb >/dev/null 2>&1 || missing+=(xvfb)
    command -v xdotool >/dev/null 2>&1 || missing+=(xdotool)
    command -v import >/dev/null 2>&1 || missing+=(imagemagick)
    command -v dbus-daemon >/dev/null 2>&1 || missing+=(dbus-daemon)
    [[ -x /usr/libexec/at-spi-bus-launcher ]] || missing+=(at-spi2-core)
    /usr/bin/python3 -c 'import dogtail' >/dev/null 2>&1 || missing+=(python3-dogtail)
    if [[ ${#missing[@]} -eq 0 ]]; then
        log "virt-manager test tools: present"
        return 0
    fi
    need_root "installing ${missing[*]}"
    log "installing: ${missing[*]}"
    local aptlog
    aptlog="$(mktemp /tmp/virtbus-apt.XXXXXX)"
    if ! {
        DEBIAN_FRONTEND=noninteractive apt-get update -q &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
                "${missing[@]}"
    } >"$aptlog" 2>&1; then
        show_tail "$aptlog" 60
        die "apt-get failed installing ${missing[*]}; full log: $aptlog"
    fi
    rm -f "$aptlog"
    command -v virt-manager >/dev/null 2>&1 || die "virt-manager still missing after install"
    /usr/bin/python3 -c 'import dogtail' || die "python3-dogtail does not import after install"
}

install_packages() {
    local missing=()
    command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
    command -v rabbitmq-server >/dev/null 2>&1 || missing+=(rabbitmq-server)
    busybox_is_static || missing+=(busybox-static)
    command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
    find_python >/dev/null || missing+=(python3 python3-venv)
    command -v node >/dev/null 2>&1 || missing+=(nodejs)
    command -v npm >/dev/null 2>&1 || missing+=(npm)
    # the registry-credentials tests run a real registry with basic auth
    command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
    command -v htpasswd >/dev/null 2>&1 || missing+=(apache2-utils)
    # the dashboard's browser tests drive headless Chromium through Selenium
    command -v chromium >/dev/null 2>&1 || missing+=(chromium)
    command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
    # scripts/build-image.sh makes the image's base from Debian's mirror (tests/integration/
    # test_image.py builds it once, about 5 minutes, and the engine keeps it)
    command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)

    if [[ ${#missing[@]} -eq 0 ]]; then
        log "system packages: all present"
        return 0
    fi
    need_root "installing ${missing[*]}"
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install manually: ${missing[*]}"

    # There is no systemd/init here: keep maintainer scripts from trying to
    # start services (we start dockerd and rabbitmq ourselves below).
    local policy=/usr/sbin/policy-rc.d created_policy=0
    if [[ ! -e "$policy" ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 0755 "$policy"
        created_policy=1
    fi

    log "installing: ${missing[*]}"
    local rc=0 aptlog
    aptlog="$(mktemp /tmp/virtbus-apt.XXXXXX)"
    {
        DEBIAN_FRONTEND=noninteractive apt-get update -q &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
                -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
                "${missing[@]}"
    } >"$aptlog" 2>&1 || rc=$?
    if [[ $created_policy -eq 1 ]]; then rm -f "$policy"; fi
    if [[ $rc -ne 0 ]]; then
        show_tail "$aptlog" 60
        die "apt-get failed (exit $rc); full log: $aptlog"
    fi
    rm -f "$aptlog"

    command -v dockerd >/dev/null 2>&1 || die "dockerd still missing after install"
    command -v rabbitmq-server >/dev/null 2>&1 || die "rabbitmq-server still missing after install"
    busybox_is_static || die "/bin/busybox is not the static busybox after install"
    command -v docker-compose >/dev/null 2>&1 || die "docker-compose still missing after install"
    command -v node >/dev/null 2>&1 || die "node still missing after install"
    command -v npm >/dev/null 2>&1 || die "npm still missing after install"
    command -v docker-registry >/dev/null 2>&1 || die "docker-registry still missing after install"
    command -v htpasswd >/dev/null 2>&1 || die "htpasswd still missing after install"
    command -v debootstrap >/dev/null 2>&1 || die "debootstrap still missing after install"
    command -v chromium >/dev/null 2>&1 || die "chromium still missing after install"
    command -v chromedriver >/dev/null 2>&1 || die "chromedriver still missing after install"
    log "packages installed"
}

# ------------------------------------------------------------------ docker --
docker_up() { timeout 15 docker info >/dev/null 2>&1; }

start_docker() {
    if docker_up; then
        log "dockerd: already running"
        return 0
    fi
    need_root "starting dockerd"
    if pgrep -x dockerd >/dev/null 2>&1; then
        log "dockerd: process exists but does not answer yet; waiting"
    else
        log "dockerd: starting (log: $DOCKERD_LOG)"
        # --bridge=none: never create a bridge network (private ranges are off limits).
        nohup setsid dockerd --bridge=none --iptables=false --ip6tables=false \
            </dev/null >"$DOCKERD_LOG" 2>&1 &
    fi
    local deadline=$((SECONDS + DOCKER_WAIT))
    until docker_up; do
        if ((SECONDS >= deadline)); then
            show_tail "$DOCKERD_LOG"
            die "dockerd did not answer within ${DOCKER_WAIT}s"
        fi
        sleep 1
    done
    log "dockerd: up"
}

# ---------------------------------------------------------------- rabbitmq --
rabbit_ping() { timeout 20 rabbitmq-diagnostics -q ping >/dev/null 2>&1; }
amqp_port_open() { timeout 3 bash -c '</dev/tcp/127.0.0.1/5672' 2>/dev/null; }

rabbit_logs() {
    local f
    for f in /var/log/rabbitmq/startup_err /var/log/rabbitmq/startup_log \
        /var/log/rabbitmq/rabbit@*.log; do
        [[ "$f" == *_upgrade.log ]] && continue
        show_tail "$f" 30
    done
}

# RabbitMQ's documented production setting is at least 65536 descriptors: a node at the
# default 1024 holds 832 sockets (927 descriptors in all), too few for a fleet (B8 runs
# 5,000 hosts). As many as the hard limit allows, up to that; root raises the hard limit
# first where it may (in a container it may not).
RABBIT_NOFILE=65536
rabbit_nofile() {
    local hard
    ulimit -H -n "$RABBIT_NOFILE" 2>/dev/null || true
    hard=$(ulimit -H -n)
    if [[ "$hard" == unlimited ]] || ((hard > RABBIT_NOFILE)); then
        hard=$RABBIT_NOFILE
    fi
    echo "$hard"
}

# su (pam_limits) resets the soft limit to 1024, so the limit is raised again as the
# rabbitmq user, which then starts the node through the Debian wrapper.
rabbit_detached() (
    local nofile
    nofile=$(rabbit_nofile)
    ulimit -H -n "$RABBIT_NOFILE" 2>/dev/null || true
    su rabbitmq -s /bin/sh -c "ulimit -n $nofile && exec $(command -v rabbitmq-server) -detached"
)

# The machine's own node (rabbit@…): the test suite's private clusters run other nodes
# (RABBITMQ_NODENAME=vbs1@localhost…) as the same user, and they are not it.
default_node_exists() {
    local pid name
    for pid in $(pgrep -u rabbitmq -f 'beam.*rabbit' 2>/dev/null); do
        name=$(tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | sed -n 's/^RABBITMQ_NODENAME=//p')
        if [[ -z $name || $name == rabbit@* ]]; then
            return 0
        fi
    done
    return 1
}

start_rabbitmq() {
    if rabbit_ping && amqp_port_open; then
        log "rabbitmq: already running"
    else
        need_root "starting rabbitmq"
        if ! rabbit_ping && ! default_node_exists; then
            log "rabbitmq: starting (rabbitmq-server -detached, ulimit -n $(rabbit_nofile))"
            rabbit_detached >/dev/null 2>&1 || {
                rabbit_logs
                die "rabbitmq-server -detached failed"
            }
        else
            log "rabbitmq: node exists but is not ready yet; waiting"
        fi
        local deadline=$((SECONDS + RABBIT_WAIT)) left
        while :; do
            left=$((deadline - SECONDS))
            if ((left <= 0)); then
                rabbit_logs
                die "rabbitmq did not start within ${RABBIT_WAIT}s"
            fi
            # await_startup needs the Erlang node to be reachable already, so
            # retry until the node is up and the app has finished booting.
            if timeout "$left" rabbitmqctl -q -t "$left" await_startup >/dev/null 2>&1 &&
                amqp_port_open; then
                break
            fi
            sleep 2
        done
        log "rabbitmq: up"
    fi

    amqp_port_open || die "rabbitmq does not listen on 127.0.0.1:5672"

    # Default guest/guest is allowed from loopback; recreate it if it is gone.
    if ! timeout 30 rabbitmqctl -q authenticate_user guest guest >/dev/null 2>&1; then
        need_root "restoring the guest user"
        log "rabbitmq: guest/guest does not authenticate; (re)creating it"
        if timeout 30 rabbitmqctl -q list_users 2>/dev/null | awk '{print $1}' | grep -qx guest; then
            timeout 30 rabbitmqctl -q change_password guest guest >/dev/null
        else
            timeout 30 rabbitmqctl -q add_user guest guest >/dev/null
        fi
        timeout 30 rabbitmqctl -q set_user_tags guest administrator >/dev/null
        timeout 30 rabbitmqctl -q set_permissions -p / guest '.*' '.*' '.*' >/dev/null
        timeout 30 rabbitmqctl -q authenticate_user guest guest >/dev/null 2>&1 ||
            die "guest/guest still does not authenticate"
    fi
}

# The management API (127.0.0.1:15672): `virtbus provision` creates broker users with it.
management_up() { timeout 3 bash -c '</dev/tcp/127.0.0.1/15672' 2>/dev/null; }

enable_management() {
    if timeout 30 rabbitmq-plugins -q is_enabled rabbitmq_management >/dev/null 2>&1 &&
        management_up; then
        log "rabbitmq management API: already on"
        return 0
    fi
    need_root "enabling rabbitmq_management"
    log "rabbitmq management API: enabling (no broker restart)"
    timeout 60 rabbitmq-plugins -q enable rabbitmq_management >/dev/null ||
        die "rabbitmq-plugins enable rabbitmq_management failed"
    local deadline=$((SECONDS + MANAGEMENT_WAIT))
    until management_up; do
        ((SECONDS < deadline)) || die "the management API did not listen on 15672 within ${MANAGEMENT_WAIT}s"
        sleep 1
    done
    log "rabbitmq management API: up"
}

# ------------------------------------------------------------- test images --
image_current() { # ref -> 0 if present and built by this version of the script
    local v
    v="$(docker image inspect --format "{{ index .Config.Labels \"$TEST_IMAGE_LABEL\" }}" "$1" 2>/dev/null)" ||
        return 1
    [[ "$v" == "$TEST_IMAGE_VERSION" ]]
}

ROOTFS=""
cleanup_rootfs() { if [[ -n "$ROOTFS" ]]; then rm -rf "$ROOTFS"; fi; }

make_rootfs() {
    [[ -n "$ROOTFS" ]] && return 0
    busybox_is_static || die "/bin/busybox is missing or not statically linked"
    ROOTFS="$(mktemp -d /tmp/virtbus-rootfs.XXXXXX)"
    trap cleanup_rootfs EXIT
    local r="$ROOTFS" applet
    mkdir -p "$r/bin" "$r/etc" "$r/tmp" "$r/root" "$r/home/user" "$r/proc" "$r/sys" "$r/dev"
    chmod 1777 "$r/tmp"
    chmod 0700 "$r/root"
    cp /bin/busybox "$r/bin/busybox"
    chmod 0755 "$r/bin/busybox"
    while IFS= read -r applet; do
        [[ -z "$applet" || "$applet" == busybox || "$applet" == */* ]] && continue
        ln -sf busybox "$r/bin/$applet"
    done < <(/bin/busybox --list)
    for applet in sh sleep true false kill cat echo ls env id pwd yes head dd; do
        [[ -e "$r/bin/$applet" ]] || die "busybox lacks applet '$applet'"
    done
    cat >"$r/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
user:x:1000:1000:user:/home/user:/bin/sh
nobody:x:65534:65534:nobody:/:/bin/false
EOF
    cat >"$r/etc/group" <<'EOF'
root:x:0:
user:x:1000:
nogroup:x:65534:
EOF
    chown 1000:1000 "$r/home/user" 2>/dev/null || true
}

import_image() { # tag [extra --change args...]
    local ref="$TEST_IMAGE_REPO:$1"
    shift
    make_rootfs
    log "image $ref: building"
    local id
    id="$(tar -C "$ROOTFS" --numeric-owner -c . |
        docker import \
            -c 'ENV PATH=/bin' \
            -c "LABEL $TEST_IMAGE_LABEL=$TEST_IMAGE_VERSION" \
            "$@" - "$ref")" || die "docker import of $ref failed"
    log "image $ref: built ${id:0:19}"
}

build_images() {
    if image_current "$TEST_IMAGE_REPO:latest"; then
        log "image $TEST_IMAGE_REPO:latest: present"
    else
        import_image latest -c 'CMD ["/bin/sh"]'
    fi
    if image_current "$TEST_IMAGE_REPO:nocmd"; then
        log "image $TEST_IMAGE_REPO:nocmd: present"
    else
        import_image nocmd # no CMD on purpose
    fi
    cleanup_rootfs
    ROOTFS=""
}

# -------------------------------------------------------------------- venv --
setup_venv() {
    if [[ ! -f "$REPO_ROOT/pyproject.toml" ]]; then
        log "WARNING: pyproject.toml not found; skipping the virtualenv step"
        return 0
    fi
    local py
    if [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        :
    else
        py="$(find_python)" || die "no Python >= 3.11 with venv/ensurepip found"
        log "venv: creating $VENV with $py"
        rm -rf "$VENV"
        "$py" -m venv "$VENV" || die "could not create $VENV"
    fi
    if [[ -f "$STAMP" && ! "$REPO_ROOT/pyproject.toml" -nt "$STAMP" ]]; then
        log "venv: up to date"
        return 0
    fi
    log "venv: pip install -e '.[dev]'"
    local piplog
    piplog="$(mktemp /tmp/virtbus-pip.XXXXXX)"
    if ! {
        "$VENV/bin/python" -m pip install -q --upgrade pip &&
            "$VENV/bin/python" -m pip install -q -e "${REPO_ROOT}[dev]"
    } >"$piplog" 2>&1; then
        show_tail "$piplog" 60
        die "pip install failed; full log: $piplog"
    fi
    rm -f "$piplog"
    touch "$STAMP"
    log "venv: installed"
}

# --------------------------------------------------------- asyncapi parser --
node_ok() { # -> 0 if node is recent enough for @asyncapi/parser
    node -e "process.exit(Number(process.versions.node.split('.')[0]) >= $NODE_MIN_MAJOR ? 0 : 1)" \
        >/dev/null 2>&1
}

setup_asyncapi() {
    local dir="$ASYNCAPI_TOOLS"
    if [[ ! -f "$dir/package-lock.json" ]]; then
        log "WARNING: $dir/package-lock.json not found; skipping the AsyncAPI parser step"
        return 0
    fi
    node_ok || die "the AsyncAPI parser needs Node.js >= $NODE_MIN_MAJOR (found: $(node --version 2>/dev/null || echo none))"
    if [[ -f "$ASYNCAPI_STAMP" && ! "$dir/package-lock.json" -nt "$ASYNCAPI_STAMP" &&
        ! "$dir/package.json" -nt "$ASYNCAPI_STAMP" ]]; then
        log "asyncapi parser: up to date"
        return 0
    fi
    log "asyncapi parser: npm ci in ${dir#"$REPO_ROOT"/}"
    local rc=0 npmlog
    npmlog="$(mktemp /tmp/virtbus-npm.XXXXXX)"
    # --ignore-scripts: the parser needs no install scripts (one dependency's
    # only script is telemetry).
    timeout "$NPM_WAIT" npm ci --prefix "$dir" --no-audit --no-fund --ignore-scripts \
        --loglevel=error >"$npmlog" 2>&1 || rc=$?
    if [[ $rc -ne 0 ]]; then
        show_tail "$npmlog" 60
        if [[ $rc -eq 124 ]]; then
            die "npm ci did not finish within ${NPM_WAIT}s; full log: $npmlog"
        fi
        die "npm ci failed (exit $rc); full log: $npmlog"
    fi
    rm -f "$npmlog"
    [[ -f "$dir/node_modules/@asyncapi/parser/package.json" ]] ||
        die "npm ci finished but @asyncapi/parser is not in $dir/node_modules"
    touch "$ASYNCAPI_STAMP"
    log "asyncapi parser: installed"
}

# ------------------------------------------------------------------- main ---
install_packages
install_libvirt_clients
install_virt_manager_tools
start_docker
start_rabbitmq
enable_management
build_images
setup_venv
setup_asyncapi

img_id="$(docker image inspect --format '{{.Id}}' "$TEST_IMAGE_REPO:latest")"
nocmd_id="$(docker image inspect --format '{{.Id}}' "$TEST_IMAGE_REPO:nocmd")"
echo "virtbus setup OK"
echo "  docker:   $(docker version --format '{{.Server.Version}}' 2>/dev/null || echo '?')"
echo "  rabbitmq: up on 127.0.0.1:5672 ($(rabbitmqctl -q version 2>/dev/null || echo '?'))"
echo "  images:   $TEST_IMAGE_REPO:latest ${img_id:7:12}, $TEST_IMAGE_REPO:nocmd ${nocmd_id:7:12}"
if [[ -x "$VENV/bin/python" ]]; then
    echo "  venv:     $VENV ($("$VENV/bin/python" --version 2>&1))"
else
    echo "  venv:     (skipped: no pyproject.toml)"
fi
if [[ -f "$ASYNCAPI_STAMP" ]]; then
    parser_version="$(node -p 'require(process.argv[1]).version' \
        "$ASYNCAPI_TOOLS/node_modules/@asyncapi/parser/package.json" 2>/dev/null || echo '?')"
    echo "  asyncapi: @asyncapi/parser $parser_version (node $(node --version 2>/dev/null || echo '?'))"
else
    echo "  asyncapi: (skipped: no tools/asyncapi/package-lock.json)"
fi
