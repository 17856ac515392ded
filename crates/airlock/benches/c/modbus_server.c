/* A libmodbus TCP server for the whole-path benchmark: REGISTERS holding registers on
 * 127.0.0.1:PORT, one client at a time (as many PLCs serve), each read answered from the table,
 * and then the first register it read moved on by one: a value in every request changes from
 * poll to poll (as a counter or a fast analog value does), the others hold still (as most of a
 * PLC's registers do between two polls a millisecond apart).
 * Prints "listening" once it accepts connections.
 *
 * usage: modbus_server PORT REGISTERS
 */
#include <errno.h>
#include <modbus.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s PORT REGISTERS\n", argv[0]);
        return 2;
    }
    int port = atoi(argv[1]);
    int count = atoi(argv[2]);
    modbus_t *ctx = modbus_new_tcp("127.0.0.1", port);
    modbus_mapping_t *map = modbus_mapping_new(0, 0, count, 0);
    if (ctx == NULL || map == NULL) {
        fprintf(stderr, "modbus: %s\n", modbus_strerror(errno));
        return 1;
    }
    for (int i = 0; i < count; i++) map->tab_registers[i] = (uint16_t)i;
    int listener = modbus_tcp_listen(ctx, 1);
    if (listener < 0) {
        fprintf(stderr, "listen: %s\n", modbus_strerror(errno));
        return 1;
    }
    printf("listening\n");
    fflush(stdout);
    uint8_t query[MODBUS_TCP_MAX_ADU_LENGTH];
    for (;;) {
        if (modbus_tcp_accept(ctx, &listener) < 0) continue;
        for (;;) {
            int n = modbus_receive(ctx, query);
            if (n == 0) continue;
            if (n < 0) break;
            modbus_reply(ctx, query, n, map);
            /* MBAP header (7 bytes), function, address, quantity. */
            if (n >= 12 && query[7] == 3) {
                int address = (query[8] << 8) | query[9];
                if (address < count) map->tab_registers[address]++;
            }
        }
        close(modbus_get_socket(ctx));
    }
}
