/* placeholder */ typedef int kr__placeholder_http1;
