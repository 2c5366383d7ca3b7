"""The fixed-point accelerator target: int8 program, schedule, plan, C and QDQ export."""
