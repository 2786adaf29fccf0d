# Run by hangard in a standby guest through qemu-guest-agent (sh -c SCRIPT warmup
# USER PORT [SSH_DIR]): one public key login to the guest's own sshd on 127.0.0.1,
# with the throwaway key read from standard input, refused (the guest accepts no
# key of hangard's). The point is that sshd runs its connection path once (fork and
# re-exec, key exchange, the login attempt) so that TCG has translated that code
# before a user connects. The host key is checked against the guest's own host
# keys (under an alias, whatever the port): no "accept any key". Without an ssh
# client in the guest, sshd's banner only (perl: every guest with a standby
# identity script has it).
set -u
user=$1
port=$2
ssh_dir=${3:-/etc/ssh}
dir=$(mktemp -d) || exit 1
trap 'rm -rf "$dir"' EXIT
umask 077
cat > "$dir/key"
for pub in "$ssh_dir"/ssh_host_*_key.pub; do
    [ -f "$pub" ] && printf 'hangar-warmup %s\n' "$(cat "$pub")"
done > "$dir/known_hosts"
if command -v ssh > /dev/null 2>&1; then
    ssh -i "$dir/key" -p "$port" \
        -o IdentitiesOnly=yes -o BatchMode=yes -o HostKeyAlias=hangar-warmup \
        -o UserKnownHostsFile="$dir/known_hosts" -o GlobalKnownHostsFile=/dev/null \
        -o LogLevel=QUIET -o ConnectTimeout=10 \
        "$user@127.0.0.1" true < /dev/null > /dev/null 2>&1
else
    perl -MIO::Socket::INET -e '
        my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$ARGV[0]", Timeout => 10)
            or exit 1;
        my $banner = <$s>;' "$port"
fi
# Its status is the login's (refused: 255); hangard does not look at it.
