from mcp_relay_admin.cli import main

main()
