# Zynq-7000 processing system (processing_system7 5.5) settings of the Pynq-Z2, written out as
# CONFIG.* properties so that no board file has to be installed.
#
# The board values (DDR3 part and timing, trace delays, MIO assignment) are the Pynq-Z2's, as its
# vendor and the PYNQ project configure it; the PL-facing values (FCLK_CLK0, M_AXI_GP0, S_AXI_HP0,
# IRQ_F2P) come from the generated params.tcl. On a PYNQ image the boot loader has already set up
# DDR and MIO when an overlay is loaded; these values keep the .hwh truthful and make the design
# usable outside PYNQ too.

namespace eval zynqnn {}

# The property list for `set_property -dict`.
#   fclk0_mhz:     requested FCLK_CLK0 frequency (the PS picks the nearest IO PLL divisors)
#   hp0_data_bits: S_AXI_HP0 width, 32 or 64
proc zynqnn::ps7_pynq_z2_properties {fclk0_mhz hp0_data_bits} {
    return [list \
        CONFIG.PCW_PRESET_BANK0_VOLTAGE {LVCMOS 3.3V} \
        CONFIG.PCW_PRESET_BANK1_VOLTAGE {LVCMOS 1.8V} \
        CONFIG.PCW_CRYSTAL_PERIPHERAL_FREQMHZ {50} \
        CONFIG.PCW_APU_PERIPHERAL_FREQMHZ {650} \
        \
        CONFIG.PCW_UIPARAM_DDR_MEMORY_TYPE {DDR 3} \
        CONFIG.PCW_UIPARAM_DDR_PARTNO {MT41K256M16 RE-125} \
        CONFIG.PCW_UIPARAM_DDR_BUS_WIDTH {16 Bit} \
        CONFIG.PCW_UIPARAM_DDR_FREQ_MHZ {525} \
        CONFIG.PCW_UIPARAM_DDR_TRAIN_WRITE_LEVEL {1} \
        CONFIG.PCW_UIPARAM_DDR_TRAIN_READ_GATE {1} \
        CONFIG.PCW_UIPARAM_DDR_TRAIN_DATA_EYE {1} \
        CONFIG.PCW_UIPARAM_DDR_USE_INTERNAL_VREF {0} \
        CONFIG.PCW_UIPARAM_DDR_BOARD_DELAY0 {0.223} \
        CONFIG.PCW_UIPARAM_DDR_BOARD_DELAY1 {0.212} \
        CONFIG.PCW_UIPARAM_DDR_DQS_TO_CLK_DELAY_0 {0.040} \
        CONFIG.PCW_UIPARAM_DDR_DQS_TO_CLK_DELAY_1 {0.058} \
        CONFIG.PCW_UIPARAM_DDR_CLOCK_0_LENGTH_MM {25.8} \
        CONFIG.PCW_UIPARAM_DDR_CLOCK_1_LENGTH_MM {25.8} \
        CONFIG.PCW_UIPARAM_DDR_DQS_0_LENGTH_MM {15.6} \
        CONFIG.PCW_UIPARAM_DDR_DQS_1_LENGTH_MM {18.8} \
        CONFIG.PCW_UIPARAM_DDR_DQ_0_LENGTH_MM {16.5} \
        CONFIG.PCW_UIPARAM_DDR_DQ_1_LENGTH_MM {18} \
        \
        CONFIG.PCW_QSPI_PERIPHERAL_ENABLE {1} \
        CONFIG.PCW_QSPI_GRP_SINGLE_SS_ENABLE {1} \
        CONFIG.PCW_QSPI_GRP_FBCLK_ENABLE {1} \
        CONFIG.PCW_ENET0_PERIPHERAL_ENABLE {1} \
        CONFIG.PCW_ENET0_ENET0_IO {MIO 16 .. 27} \
        CONFIG.PCW_ENET0_GRP_MDIO_ENABLE {1} \
        CONFIG.PCW_ENET0_GRP_MDIO_IO {MIO 52 .. 53} \
        CONFIG.PCW_ENET0_PERIPHERAL_FREQMHZ {1000 Mbps} \
        CONFIG.PCW_USB0_PERIPHERAL_ENABLE {1} \
        CONFIG.PCW_USB0_USB0_IO {MIO 28 .. 39} \
        CONFIG.PCW_SD0_PERIPHERAL_ENABLE {1} \
        CONFIG.PCW_SD0_SD0_IO {MIO 40 .. 45} \
        CONFIG.PCW_SD0_GRP_CD_ENABLE {1} \
        CONFIG.PCW_SD0_GRP_CD_IO {MIO 47} \
        CONFIG.PCW_UART0_PERIPHERAL_ENABLE {1} \
        CONFIG.PCW_UART0_UART0_IO {MIO 14 .. 15} \
        CONFIG.PCW_GPIO_MIO_GPIO_ENABLE {1} \
        \
        CONFIG.PCW_FCLK0_PERIPHERAL_CLKSRC {IO PLL} \
        CONFIG.PCW_FPGA0_PERIPHERAL_FREQMHZ $fclk0_mhz \
        CONFIG.PCW_EN_CLK0_PORT {1} \
        CONFIG.PCW_FPGA_FCLK0_ENABLE {1} \
        CONFIG.PCW_EN_RST0_PORT {1} \
        CONFIG.PCW_USE_M_AXI_GP0 {1} \
        CONFIG.PCW_USE_S_AXI_HP0 {1} \
        CONFIG.PCW_S_AXI_HP0_DATA_WIDTH $hp0_data_bits \
        CONFIG.PCW_USE_FABRIC_INTERRUPT {1} \
        CONFIG.PCW_IRQ_F2P_INTR {1} \
    ]
}
