# hangar: give a guest resumed from a warm template its own identity.
#
# Run as root by qemu-guest-agent (guest-exec: perl -e THIS), or saved waiting
# (below). One process and no modules: under TCG every program started in a freshly
# resumed guest costs tens of milliseconds of translation, so everything is done
# with perl builtins and system calls instead of hostname, ip, sed, ssh-keygen and
# systemctl (perl-base is Essential in Debian, so every Debian-family image has it).
#
# Standard input (or what comes on the port or FIFO, see --port and --wait below):
# records "NAME LENGTH\n" followed by LENGTH bytes and "\n":
#   seed       host randomness (raw bytes)
#   time       the host's clock: "SECONDS NANOSECONDS" (left alone when absent)
#   name       the new hostname
#   old, new   the saved MAC and the new one
#   machine-id the new machine-id
#   wait       seconds to wait for the lease (default 30)
#   root       (tests only) a folder that stands for / for the files in /etc and /run
#   file:PATH  a file to put in place (SSH host keys, made on the host), if its
#              folder exists; its mode first: "0600 " + content
#   drop:DIR   remove the files in DIR whose names match the value (a regular
#              expression), except the files given (host keys of other types)
# Prints "NIC ADDRESS" once the NIC has a DHCP lease for its new MAC.
# Exit codes: 1 a step failed, 3 no NIC with the saved MAC, 4 no lease in time.

# With --port (below) the answer also goes back to hangard on the port.
my $reply;
sub answer { syswrite($reply, "$_[0]\n") if $reply }
sub fail {
    print STDERR "$_[0]\n";
    answer("fail " . ($_[1] || 1) . " $_[0]");
    exit($_[1] || 1);
}

sub slurp {
    open(my $f, '<', $_[0]) or return undef;
    binmode $f;
    local $/;
    my $data = <$f>;
    close $f;
    return $data;
}

# Write a file whole: a temporary file renamed over it, so no reader ever sees
# half of it. Keeps the old file's mode unless one is given.
sub put {
    my ($path, $data, $mode) = @_;
    $mode = (stat $path)[2] & 07777 if !defined $mode && -e $path;
    $mode = 0644 unless defined $mode;
    my $tmp = "$path.hangar-new";
    open(my $f, '>', $tmp) or fail("$tmp: $!");
    binmode $f;
    chmod($mode, $tmp) or fail("chmod $tmp: $!");
    print $f $data or fail("$tmp: $!");
    close $f or fail("$tmp: $!");
    rename($tmp, $path) or fail("$path: $!");
}

# The clock: the guest slept since the template was saved. Setting it wakes every
# program with timers on the wall clock (systemd re-plans all its timer units), a
# third of a second of guest CPU under TCG: a child does it once the parent, and
# with it the identity step, has ended. clock_settime(CLOCK_REALTIME, {sec, nsec})
# is system call 227 on x86_64; the host's time is moved on by the time spent here.
my ($started, %arg, @files, @drops);
sub monotonic {
    my $buf = "\0" x 16;
    syscall(228, 1, $buf) == 0 or fail("clock_gettime: $!");    # CLOCK_MONOTONIC
    my ($sec, $nsec) = unpack('q q', $buf);
    return $sec * 1_000_000_000 + $nsec;
}
sub set_clock_after_exit {
    return unless defined $arg{time};
    my ($sec, $nsec) = split / /, $arg{time};
    my $pid = fork;
    return if !defined $pid || $pid;    # the parent (or no child: the clock stays)
    close STDOUT;
    close STDERR;
    close STDIN;
    close $reply if $reply;
    my $now = $sec * 1_000_000_000 + $nsec + monotonic() - $started;
    syscall(227, 0, pack('q q', int($now / 1_000_000_000), $now % 1_000_000_000));
    exit 0;
}

# "--wait DIR": started when a warm template is saved, and saved with it, waiting.
# It makes the FIFO DIR/request and the file DIR/ready, then blocks until hangard
# writes the input into the FIFO: a resumed guest starts its identity at once, with
# no program to start. Input "cancel 0\n\n" ends it with nothing done (the source VM).
#
# "--port NAME DIR": the same, but waiting on hangar's own virtio-serial port NAME,
# so a launch needs no agent call at all: hangard connects to the port's socket and
# writes "LENGTH\n" and the input; the answer comes back on the port: "ok NIC
# ADDRESS STEPS", "fail CODE MESSAGE" or "cancelled" (STEPS: "random=40,mac=96,..",
# milliseconds from the input to the end of each step). While hangard is not
# connected a read returns end-of-file at once; the driver sends SIGIO when it
# connects or data comes, so the script sleeps in sigsuspend until then (SIGIO
# blocked in between, so none is lost). DIR/ready says it waits.
#
# On the port, input with an "again" record makes it wait for more input once it
# has answered: a standby VM (warm.py) takes a first identity at once, which has
# TCG translate this whole path, and its final name when a launch claims it. Input
# whose new MAC is the old one changes only what it carries (the name): no MAC, no
# lease to wait for.
my ($in, $next_input);
if (@ARGV && $ARGV[0] eq '--port') {
    my ($want, $dir) = @ARGV[1, 2];
    require POSIX;
    my $device;
    opendir(my $ports, '/sys/class/virtio-ports') or fail("/sys/class/virtio-ports: $!");
    for my $entry (readdir $ports) {
        my $name = slurp("/sys/class/virtio-ports/$entry/name");
        next unless defined $name;
        chomp $name;
        $device = "/dev/$entry" if $name eq $want;
    }
    closedir $ports;
    fail("no virtio-serial port named $want") unless defined $device;
    my $sigio = POSIX::SigSet->new(29);    # SIGIO
    POSIX::sigprocmask(POSIX::SIG_BLOCK(), $sigio) or fail("sigprocmask: $!");
    $SIG{IO} = sub { };    # its default action ends the process
    sysopen(my $port, $device, 2) or fail("$device: $!");    # O_RDWR
    binmode $port;
    fcntl($port, 8, 0 + $$) or fail("F_SETOWN $device: $!");
    my $flags = fcntl($port, 3, 0) or fail("F_GETFL $device: $!");
    fcntl($port, 4, $flags | 0x2000) or fail("O_ASYNC $device: $!");
    mkdir($dir, 0700) or $!{EEXIST} or fail("$dir: $!");
    open(my $ready, '>', "$dir/ready") or fail("$dir/ready: $!");
    close $ready;
    $next_input = sub {
        my $buf = '';
        while (1) {
            my $n = sysread($port, $buf, 65536, length $buf);
            if (!defined $n) {
                next if $!{EINTR};
                fail("$device: $!");
            }
            if ($n == 0) {    # hangard is not connected: wait for it
                POSIX::sigsuspend(POSIX::SigSet->new());
                next;
            }
            return substr($buf, length($1) + 1, $1)
                if $buf =~ /^(\d+)\n/ && length($buf) >= length($1) + 1 + $1;
        }
    };
    $in = $next_input->();
    unlink "$dir/ready";
    rmdir $dir;
    $reply = $port;
}
elsif (@ARGV && $ARGV[0] eq '--wait') {
    my $dir = $ARGV[1];
    require POSIX;
    mkdir($dir, 0700) or $!{EEXIST} or fail("$dir: $!");
    chmod(0700, $dir) or fail("$dir: $!");
    unlink "$dir/request", "$dir/ready";
    POSIX::mkfifo("$dir/request", 0600) or fail("$dir/request: $!");
    open(my $ready, '>', "$dir/ready") or fail("$dir/ready: $!");
    close $ready;
    open(my $fifo, '<', "$dir/request") or fail("$dir/request: $!");
    binmode $fifo;
    $in = do { local $/; <$fifo> };
    close $fifo;
    unlink "$dir/request", "$dir/ready";
    rmdir $dir;
}
else {
    binmode STDIN;
    $in = do { local $/; <STDIN> };
}
# Milliseconds since the input came, step by step: they go back with the answer.
my @steps;
sub mark { push @steps, "$_[0]=" . int((monotonic() - $started) / 1e6) }
while (1) {
    $started = monotonic();
    (%arg, @files, @drops, @steps) = ();
    my $at = 0;
    while ($at < length $in) {
        my $eol = index($in, "\n", $at);
        fail("bad input at byte $at") if $eol < 0;
        my ($key, $len) = split / /, substr($in, $at, $eol - $at);
        my $value = substr($in, $eol + 1, $len);
        $at = $eol + 1 + $len + 1;
        if ($key =~ /^file:(.+)$/) { push @files, [$1, $value] }
        elsif ($key =~ /^drop:(.+)$/) { push @drops, [$1, $value] }
        else { $arg{$key} = $value }
    }
    if (exists $arg{cancel}) { answer("cancelled"); exit 0 }
    apply();
    set_clock_after_exit();
    exit 0 unless exists $arg{again} && $next_input;
    $in = $next_input->();
}

# networkd writes the lease file before the kernel has the address: until then a
# connection to it is dropped, and the sender only tries again seconds later. The
# kernel's local routes (/proc/net/fib_trie) say when it has it.
sub address_is_local {
    my $trie = slurp('/proc/net/fib_trie');
    return 1 unless defined $trie;    # no way to tell: the lease will do
    return $trie =~ /\|-- \Q$_[0]\E\n(?:[ \t]+\/[^\n]*\n)*?[ \t]+\/32 host LOCAL/;
}

# One identity from the input in %arg, @files and @drops; answers, or fails.
sub apply {
    my ($name, $old, $new) = ($arg{name}, lc $arg{old}, lc $arg{new});
    my $root = defined $arg{root} ? $arg{root} : '';
    my $wait = defined $arg{wait} ? $arg{wait} : 30;

    # The NIC that has the saved MAC, first: a guest without it is left untouched.
    my $nic;
    opendir(my $net, '/sys/class/net') or fail("/sys/class/net: $!");
    for my $entry (readdir $net) {
        next if $entry =~ /^\./;
        my $mac = slurp("/sys/class/net/$entry/address");
        next unless defined $mac;
        chomp $mac;
        $nic = $entry if lc $mac eq $old;
    }
    closedir $net;
    fail("no NIC with MAC $old", 3) unless defined $nic;
    my $ifindex = slurp("/sys/class/net/$nic/ifindex");
    chomp $ifindex;
    my $lease = "$root/run/systemd/netif/leases/$ifindex";
    my $before = slurp($lease);
    my ($old_address) = defined $before ? $before =~ /^ADDRESS=(\S+)/m : ();
    my ($old_id) = defined $before ? $before =~ /^CLIENTID=(\S+)/m : ();
    $old_address = '' unless defined $old_address;
    $old_id = '' unless defined $old_id;
    my $old_inode = (stat $lease)[1] || 0;

    # 1. Randomness before anything else: every VM resumed from one template starts with
    # the same kernel random state. The host's bytes go into the pool and the CRNG is
    # reseeded from it (RNDRESEEDCRNG = 0x5207).
    open(my $random, '>', '/dev/urandom') or fail("/dev/urandom: $!");
    binmode $random;
    syswrite($random, $arg{seed}) or fail("/dev/urandom: $!");
    ioctl($random, 0x5207, 0) or fail("reseeding the kernel CRNG: $!");
    close $random;

    mark("random");
    # 2. The machine-id, then the hostname, which the DHCP client sends.
    put("$root/etc/machine-id", "$arg{'machine-id'}\n") if defined $arg{'machine-id'};
    open(my $uts, '>', '/proc/sys/kernel/hostname') or fail("hostname: $!");
    print $uts $name;
    close $uts or fail("hostname: $!");

    # 3. The new MAC (SIOCSIFHWADDR = 0x8924, on a running NIC: virtio-net changes it
    # live). systemd-networkd notices and restarts DHCP with it; the rest is done while
    # that goes on.
    my $same = $old eq $new;    # a new name only (a standby VM claimed)
    if (!$same) {
        socket(my $sock, 2, 2, 0) or fail("socket: $!");    # AF_INET, SOCK_DGRAM
        my $ifreq = pack('a16 S C6 x16', $nic, 1, map { hex } split /:/, $new);    # ARPHRD_ETHER
        ioctl($sock, 0x8924, $ifreq) or fail("setting the MAC of $nic: $!");
        close $sock;
    }

    mark("mac");
    # 4. The hostname in /etc/hostname and /etc/hosts.
    put("$root/etc/hostname", "$name\n");
    my $hosts = slurp("$root/etc/hosts");
    $hosts = '' unless defined $hosts;
    $hosts .= "\n" if length $hosts && $hosts !~ /\n$/;
    $hosts .= "127.0.1.1 $name\n" unless $hosts =~ s/^127\.0\.1\.1\b.*$/127.0.1.1 $name/m;
    put("$root/etc/hosts", $hosts);

    # 5. Files made on the host (SSH host keys): sshd reads its host keys at every new
    # connection, so it needs no restart. Old keys of types not given go.
    my %given = map { $_->[0] => 1 } @files;
    for my $drop (@drops) {
        my ($dir, $pattern) = ("$root$drop->[0]", $drop->[1]);
        opendir(my $d, $dir) or next;
        for my $entry (readdir $d) {
            unlink "$dir/$entry" if $entry =~ /$pattern/ && !$given{"$drop->[0]/$entry"};
        }
        closedir $d;
    }
    for my $file (@files) {
        my ($path, $value) = @$file;
        (my $dir = "$root$path") =~ s{/[^/]*$}{};
        next unless -d $dir;
        put("$root$path", substr($value, 5), oct substr($value, 0, 4));
    }

    mark("files");
    if ($same) {    # the lease and address it has stay
        fail("no DHCP lease on $nic") unless $old_address ne '';
        print "$nic $old_address\n";
        mark("done");
        answer("ok $nic $old_address " . join(",", @steps));
        return;
    }
    # 6. Configuration that names the NIC by its MAC follows it (cloud-init's networkd
    # files match on it; networkd reads them again at its next start).
    for my $dir ("$root/etc/systemd/network", "$root/run/systemd/network") {
        opendir(my $d, $dir) or next;
        for my $entry (readdir $d) {
            my $path = "$dir/$entry";
            next unless -f $path;
            my $text = slurp($path);
            put($path, $text) if defined $text && $text =~ s/\Q$old\E/$new/gi;
        }
        closedir $d;
    }

    mark("netfiles");
    # 7. Wait for networkd's lease for the new MAC, and for its address. Its client id
    # is new too: the MAC itself (hangard set ClientIdentifier=mac before the template
    # was saved); a lease with the old client id and address is the old one being saved
    # again. A server that keeps both the same is accepted after 5 s.
    my $start = time;
    while (1) {
        my $inode = (stat $lease)[1] || 0;
        if ($inode && $inode != $old_inode) {
            mark("lease") unless grep { /^lease=/ } @steps;
            my $text = slurp($lease);
            my ($address) = defined $text ? $text =~ /^ADDRESS=(\S+)/m : ();
            my ($id) = defined $text ? $text =~ /^CLIENTID=(\S+)/m : ();
            $id = '' unless defined $id;
            if (defined $address && address_is_local($address)
                && (!defined $before || $id ne $old_id || $address ne $old_address
                    || time - $start > 5)) {
                print "$nic $address\n";
                mark("done");
                answer("ok $nic $address " . join(",", @steps));
                return;
            }
        }
        fail("no DHCP lease on $nic for MAC $new", 4) if time - $start > $wait;
        select(undef, undef, undef, 0.02);
    }
}
