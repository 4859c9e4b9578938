/* placeholder */ typedef int kr__placeholder_sse_usage;
