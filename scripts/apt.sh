# Sourced by the install scripts: apt_install WHO PACKAGE... installs Debian packages as root,
# or says what is missing and fails when not root.
apt_install() {
  local who=$1
  shift
  if [ "$(id -u)" -ne 0 ]; then
    echo "$who: need $*; run as root or install them with apt-get" >&2
    return 1
  fi
  echo "$who: installing $*"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
