/* Test-signal helper for the FXO line tests, built by the tests with `cc ... -lspandsp`.
 * Every signal comes from spandsp (an independent telephony DSP library), never from
 * pasarela's own code. Audio is 8 kHz signed 16-bit little-endian on stdout/stdin.
 *
 *   sigtool dtmf DIGITS [ON_MS OFF_MS]      DTMF digits (dtmf_tx)
 *   sigtool cid bell202|v23 NUMBER|-P|-O [NAME]   FSK caller ID (adsi_tx, CLASS or CLIP MDMF)
 *   sigtool cid dtmf NUMBER|-P|-O          DTMF caller ID (adsi_tx, CLIP_DTMF, A...C / B10C / B00C)
 *   sigtool tone F1 F2 ON1 OFF1 ON2 OFF2 MS one or two frequencies (F2 = 0: one), cadence
 *                                          (all zero durations: continuous), MS long (tone_gen)
 *   sigtool dtmfrx                          prints the DTMF digits heard on stdin (dtmf_rx)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <spandsp.h>

static void out(const int16_t *amp, int n) { fwrite(amp, sizeof(int16_t), n, stdout); }

static void silence(int ms) {
    int16_t z[160] = {0};
    for (int i = 0; i < ms / 20; i++) out(z, 160);
}

static int do_dtmf(int argc, char **argv) {
    if (argc < 3) return 2;
    int on = argc > 4 ? atoi(argv[3]) : 80, off = argc > 4 ? atoi(argv[4]) : 80;
    dtmf_tx_state_t *tx = dtmf_tx_init(NULL);
    dtmf_tx_set_timing(tx, on, off);
    dtmf_tx_put(tx, argv[2], -1);
    int16_t amp[160];
    int n;
    silence(100);
    while ((n = dtmf_tx(tx, amp, 160)) > 0) out(amp, n);
    silence(100);
    dtmf_tx_free(tx);
    return 0;
}

static int do_cid(int argc, char **argv) {
    if (argc < 4) return 2;
    const char *kind = argv[2], *who = argv[3], *name = argc > 4 ? argv[4] : NULL;
    int standard = strcmp(kind, "bell202") == 0 ? ADSI_STANDARD_CLASS
                 : strcmp(kind, "v23") == 0     ? ADSI_STANDARD_CLIP
                 : strcmp(kind, "dtmf") == 0    ? ADSI_STANDARD_CLIP_DTMF
                                                : -1;
    if (standard < 0) return 2;
    adsi_tx_state_t *tx = adsi_tx_init(NULL, standard);
    uint8_t msg[256];
    int len = 0;
    if (standard == ADSI_STANDARD_CLIP_DTMF) {
        len = adsi_add_field(tx, msg, -1, 0, NULL, 0);
        if (who[0] == '-')
            len = adsi_add_field(tx, msg, len, CLIP_DTMF_C_ABSENCE,
                                 (const uint8_t *)(who[1] == 'P' ? "10" : "00"), 2);
        else
            len = adsi_add_field(tx, msg, len, CLIP_DTMF_C_CALLER_NUMBER, (const uint8_t *)who,
                                 strlen(who));
    } else {
        uint8_t type = standard == ADSI_STANDARD_CLASS ? CLASS_MDMF_CALLERID : CLIP_MDMF_CALLERID;
        len = adsi_add_field(tx, msg, -1, type, NULL, 0);
        len = adsi_add_field(tx, msg, len, CLIP_DATETIME, (const uint8_t *)"12031000", 8);
        if (who[0] == '-')
            len = adsi_add_field(tx, msg, len, CLIP_ABSENCE1, (const uint8_t *)(who + 1), 1);
        else
            len = adsi_add_field(tx, msg, len, CLIP_CALLER_NUMBER, (const uint8_t *)who,
                                 strlen(who));
        if (name)
            len = adsi_add_field(tx, msg, len, CLIP_CALLER_NAME, (const uint8_t *)name,
                                 strlen(name));
    }
    if (adsi_tx_put_message(tx, msg, len) <= 0) return 3;
    int16_t amp[160];
    int n;
    silence(100);
    while ((n = adsi_tx(tx, amp, 160)) > 0) out(amp, n);
    silence(100);
    adsi_tx_free(tx);
    return 0;
}

static int do_tone(int argc, char **argv) {
    if (argc < 9) return 2;
    int f1 = atoi(argv[2]), f2 = atoi(argv[3]);
    int d[4] = {atoi(argv[4]), atoi(argv[5]), atoi(argv[6]), atoi(argv[7])};
    int ms = atoi(argv[8]);
    int continuous = d[0] == 0;
    tone_gen_descriptor_t *desc = tone_gen_descriptor_init(
        NULL, f1, -13, f2, f2 ? -13 : 0, continuous ? ms : d[0], d[1], d[2], d[3], !continuous);
    tone_gen_state_t *g = tone_gen_init(NULL, desc);
    int16_t amp[160];
    for (int done = 0; done < ms * 8;) {
        int n = tone_gen(g, amp, 160);
        if (n <= 0) { memset(amp, 0, sizeof amp); n = 160; }
        out(amp, n);
        done += n;
    }
    tone_gen_free(g);
    tone_gen_descriptor_free(desc);
    return 0;
}

static void digit_cb(void *user, const char *digits, int len) {
    (void)user;
    fwrite(digits, 1, len, stdout);
    fflush(stdout);
}

static int do_dtmfrx(void) {
    dtmf_rx_state_t *rx = dtmf_rx_init(NULL, digit_cb, NULL);
    int16_t amp[160];
    size_t n;
    while ((n = fread(amp, sizeof(int16_t), 160, stdin)) > 0) dtmf_rx(rx, amp, (int)n);
    putchar('\n');
    dtmf_rx_free(rx);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    if (strcmp(argv[1], "dtmf") == 0) return do_dtmf(argc, argv);
    if (strcmp(argv[1], "cid") == 0) return do_cid(argc, argv);
    if (strcmp(argv[1], "tone") == 0) return do_tone(argc, argv);
    if (strcmp(argv[1], "dtmfrx") == 0) return do_dtmfrx();
    return 2;
}
