# hangar: reseed the guest kernel's CRNG from host randomness given on standard input
# (a memory-snapshot restore on a machine without vmgenid). Run by the guest agent as
# perl -e. RNDRESEEDCRNG = 0x5207.
binmode STDIN;
my $seed = do { local $/; <STDIN> };
open(my $random, '>', '/dev/urandom') or die "/dev/urandom: $!\n";
binmode $random;
syswrite($random, $seed) or die "/dev/urandom: $!\n";
ioctl($random, 0x5207, 0) or die "reseeding the kernel CRNG: $!\n";
close $random;
