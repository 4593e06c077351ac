# Scenario 2 of seed 001 (§6.4.2): a TCP server sends the upgrade command, as LuatOS's fota2
# demo tcp_self_main.lua + tcp_self_receiver.lua + customer_srv_fota.lua.
#
# The board connects to the TCP server and waits. The server sends a JSON line
#     {"fota": "true", "url": "http://host/FOTA2_DEMO_001.000.001_LuatOS-SoC_V2012_Air780EHV_1.soc"}
# and the board downloads that package, verifies it and reboots into it. A second command while
# a download runs is refused (customer_srv_fota.lua's fota_running flag); the board answers
# every message with a JSON line (docs/scenarios.md lists them).
#
# `mpfota scenario 2` (docs/scenarios.md) runs this file on the virtual board against a TCP
# command server and `mpfota serve`, after rewriting the settings block below.
import board
import libfota2
import lnet as socket
import lsys as sys
from mpfota import confirm
from triggers import tcp

log = sys.log

# ---- settings: begin ----
PROJECT = "FOTA2_DEMO"
VERSION = "001.000.000"
PRODUCT_KEY = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
SERVER_ADDR = "112.125.89.8"  # the TCP server (e.g. one opened on netlab.luatos.com)
SERVER_PORT = 45678
RUN_FOR_MS = 0  # 0: run for ever, as a device does; the host demo ends each boot after this
WIFI_SSID = ""  # ESP32: the Wi-Fi network to join; "" when the network needs no set-up
WIFI_PASSWORD = ""
# ---- settings: end ----

# netdrv_wifi (seed §6.1, the network card): join Wi-Fi; lnet reports "WIFI" up once connected.
if WIFI_SSID:
    import network

    wlan = network.WLAN(network.STA_IF)
    wlan.active(True)
    wlan.connect(WIFI_SSID, WIFI_PASSWORD)

sys.PROJECT = PROJECT
sys.VERSION = VERSION
sys.PRODUCT_KEY = PRODUCT_KEY

# mpfota: a new core boots "pending" and is confirmed once it is healthy (here: it reaches the
# network), else the next reset rolls it back. LuatOS has no such step.
boot_state = confirm.check_boot()


# 循环打印版本号, 方便看版本号变化, 非必须
def get_version():
    log.info("降功耗 找合宙")
    log.info("fota", "脚本版本号", sys.VERSION, "core版本号", board.core_version())


sys.timerLoopStart(get_version, 3000)


# 升级结果的回调函数 (the fota_running flag is cleared by triggers before this is called)
# result: 0 成功, 1 连接失败, 2 url错误, 3 服务器断开, 4 接收报文错误,
#         5 使用iot平台VERSION需要使用 xxx.yyy.zzz形式
def fota_cb(ret):
    libfota2.explain(ret)  # the seed's log lines for each result code
    if ret == 0:
        board.reset()  # rtos.reboot()


# 使用第三方服务器, 配置 opts 参数; the command's url (and its version, if any) is set
# on a copy of these for each command.
opts = {}


async def air_fota_func():
    # 如果当前时间点设置的默认网卡还没有连接成功,一直在这里循环等待
    while not socket.adapter(socket.dft()):
        log.warn("fota_task_func", "wait IP_READY", socket.dft())
        await sys.waitUntil("IP_READY", 1000)
    # 检测到了IP_READY消息
    log.info("fota_task_func", "recv IP_READY", socket.dft())
    if boot_state == "pending":
        confirm.confirm()
    # tcp_self_main: connect to the server (again after a failure), receive its commands and
    # start libfota2.request(fota_cb, opts) for {"fota": "true", "url": ...}
    tcp.start(SERVER_ADDR, SERVER_PORT, fota_cb, opts)


# 初始化FOTA任务
sys.taskInit(air_fota_func)

if RUN_FOR_MS:
    sys.timerStart(sys.stop, RUN_FOR_MS)
sys.run()
