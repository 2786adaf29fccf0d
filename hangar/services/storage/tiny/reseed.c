/* hangar-reseed: make the guest kernel reseed its CRNG now, from the seed given.
 *
 * A VM resumed from a saved guest (warm launch, fork) starts with the saved
 * kernel's random state: clones would read the same "random" numbers until the
 * kernel reseeds on its own (up to a minute later). On q35 QEMU's vmgenid tells
 * the kernel at once; microvm has no vmgenid (QEMU 7.2 puts none in its ACPI
 * tables), so hangar's identity hook runs this first: the host's 32 random bytes
 * (hex, argv[1]) are mixed into the input pool (a write to /dev/urandom), then
 * RNDRESEEDCRNG derives a new CRNG key from it. busybox has no applet for the
 * ioctl, hence this program, built static with the image.
 */
#include <fcntl.h>
#include <linux/random.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

static int nibble(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

int main(int argc, char **argv) {
    unsigned char seed[64];
    size_t n = 0;
    int fd = open("/dev/urandom", O_WRONLY);
    if (fd < 0) return 1;
    if (argc > 1) {
        const char *hex = argv[1];
        for (size_t i = 0; hex[i] && hex[i + 1] && n < sizeof seed; i += 2) {
            int hi = nibble(hex[i]), lo = nibble(hex[i + 1]);
            if (hi < 0 || lo < 0) return 3;
            seed[n++] = (unsigned char)(hi << 4 | lo);
        }
        if (n && write(fd, seed, n) != (ssize_t)n) return 4;
        memset(seed, 0, sizeof seed);
    }
    if (ioctl(fd, RNDRESEEDCRNG) != 0) return 2;
    close(fd);
    return 0;
}
